"""ONNX Runtime side of the inference comparison: the configurations `resnet bench --mode infer`
runs, in fp32 and in int8 (static QDQ quantization, per-channel int8 weights, uint8
activations), as a user deploying a ResNet on a CPU would run them.

Usage: python bench/onnxruntime_reference.py CONFIG MODE [--steps N] [--warmup N] [--threads N]
                                               [--cache DIR]
  CONFIG: infer-resnet20 | infer-resnet50-b16 | infer-resnet50-b1
  MODE:   fp32 | int8
Prints one JSON line: {"config", "mode", "images_per_sec", "ms_per_step", "peak_rss_bytes"}.

The models are PyTorch's (the paper's CIFAR ResNet of bench/pytorch_reference.py, torchvision's
ResNet-50), exported once to ONNX into --cache; the int8 model is quantized from it with
onnxruntime.quantization on random calibration batches (for speed alone, as `resnet bench
--precision int8` does). Needs torch, torchvision, onnx and onnxruntime in a virtual
environment outside the repository; the project itself never needs Python.
"""
import argparse
import json
import os
import resource
import time

import numpy as np
import onnxruntime as ort

CONFIGS = {
    "infer-resnet20": ("cifar", 20, 256, 32),
    "infer-resnet50-b16": ("imagenet", 50, 16, 224),
    "infer-resnet50-b1": ("imagenet", 50, 1, 224),
}


def export_fp32(family, depth, size, path):
    import torch
    import torchvision

    from pytorch_reference import CifarResNet

    torch.manual_seed(0)
    model = CifarResNet(depth) if family == "cifar" else getattr(torchvision.models, f"resnet{depth}")()
    model.eval()
    x = torch.randn(1, 3, size, size)
    torch.onnx.export(model, (x,), path, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)


class RandomBatches:
    """Calibration data: a few batches of normal noise (speed is all this measures)."""

    def __init__(self, size, batches=4, batch=8):
        rng = np.random.default_rng(0)
        self.data = [{"input": rng.standard_normal((batch, 3, size, size), dtype=np.float32)} for _ in range(batches)]

    def get_next(self):
        return self.data.pop() if self.data else None


def quantize_int8(fp32, path, size):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = path + ".pre.onnx"
    quant_pre_process(fp32, pre)
    quantize_static(pre, path, RandomBatches(size), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    os.remove(pre)


def model_path(cache, config, mode):
    family, depth, _, size = CONFIGS[config]
    os.makedirs(cache, exist_ok=True)
    fp32 = os.path.join(cache, f"{family}-resnet{depth}-fp32.onnx")
    if not os.path.exists(fp32):
        export_fp32(family, depth, size, fp32 + ".tmp")
        os.replace(fp32 + ".tmp", fp32)
    if mode == "fp32":
        return fp32
    int8 = os.path.join(cache, f"{family}-resnet{depth}-int8-qdq.onnx")
    if not os.path.exists(int8):
        quantize_int8(fp32, int8 + ".tmp", size)
        os.replace(int8 + ".tmp", int8)
    return int8


def main():
    p = argparse.ArgumentParser()
    p.add_argument("config", choices=sorted(CONFIGS))
    p.add_argument("mode", choices=["fp32", "int8"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "resnet-bench-onnx"))
    a = p.parse_args()
    path = model_path(a.cache, a.config, a.mode)
    _, _, batch, size = CONFIGS[a.config]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((batch, 3, size, size), dtype=np.float32)
    for _ in range(a.warmup):
        session.run(None, {"input": x})
    t = time.perf_counter()
    for _ in range(a.steps):
        session.run(None, {"input": x})
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"config": a.config, "mode": a.mode, "images_per_sec": batch * a.steps / dt,
                      "ms_per_step": 1e3 * dt / a.steps, "peak_rss_bytes": rss, "onnxruntime": ort.__version__}))


if __name__ == "__main__":
    main()
