"""Top-1 error of an ONNX model exported with `resnet export --include-preprocessing` (uint8 NHWC
input) on an image folder split (`DIR/<class>/*.jpg`, classes in sorted order), run in ONNX
Runtime: the check that a quantized checkpoint's QDQ export gives the int8 network's accuracy.

    python tools/int8/onnx_folder_error.py MODEL.onnx DATA/test [--threads 2] [--predictions OUT.txt]

Prints one JSON line: {"model", "images", "top1_error", "onnxruntime"}. With --predictions,
writes one line per image, `path<TAB>class index`. Needs onnxruntime, numpy and pillow (a virtual
environment outside the repository).
"""
import argparse
import json
import os

import numpy as np
import onnxruntime as ort
from PIL import Image


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("folder")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--predictions")
    a = p.parse_args()
    classes = sorted(d for d in os.listdir(a.folder) if os.path.isdir(os.path.join(a.folder, d)))
    files = [(os.path.join(a.folder, c, f), i) for i, c in enumerate(classes)
             for f in sorted(os.listdir(os.path.join(a.folder, c)))]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    session = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    wrong, predictions = 0, []
    for start in range(0, len(files), a.batch):
        chunk = files[start:start + a.batch]
        x = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8) for f, _ in chunk])
        top = session.run(["logits"], {"input": x})[0].argmax(1)
        wrong += int(sum(int(t) != label for t, (_, label) in zip(top, chunk)))
        predictions += [(f, int(t)) for t, (f, _) in zip(top, chunk)]
    if a.predictions:
        with open(a.predictions, "w") as out:
            out.writelines(f"{f}\t{t}\n" for f, t in predictions)
    print(json.dumps({"model": a.model, "images": len(files), "top1_error": 100.0 * wrong / len(files),
                      "onnxruntime": ort.__version__}))


if __name__ == "__main__":
    main()
