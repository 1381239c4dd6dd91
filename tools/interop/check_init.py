"""Checks `resnet train --init` on weights torchvision itself wrote, against PyTorch.

Writes torchvision's ResNet-50 with its own random initialisation (`torch.save` of
`torchvision.models.resnet50().state_dict()`), a 3-class image folder of 64x64 noise PNGs, runs
`resnet train --init resnet50.pth --freeze backbone` on it, then loads the run's checkpoint into
torchvision's ResNet-50 with a 3-output classifier and compares PyTorch's probabilities for two
images with `resnet predict --json`'s. Prints the largest difference; exit status 1 above 1e-5.

    python tools/interop/check_init.py RESNET_BINARY WORK_DIR
(needs torch, torchvision, safetensors, pillow; never needed to build or test)
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file


def main():
    resnet, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=False)
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    # torchvision's init leaves running statistics at 0/1; make them matter.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), os.path.join(work, "resnet50.pth"))
    rng = np.random.default_rng(0)
    for split, count in [("train", 4), ("test", 2)]:
        for cls in ["ant", "bee", "wasp"]:
            d = os.path.join(work, "data", split, cls)
            os.makedirs(d)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(os.path.join(d, f"{i}.png"))
    run = os.path.join(work, "run")
    subprocess.run([resnet, "train", "--init", os.path.join(work, "resnet50.pth"), "--data", os.path.join(work, "data"),
                    "--freeze", "backbone", "--augment", "none", "--eval-view", "full", "--batch-size", "4",
                    "--iterations", "3", "--quiet", "--out", run], check=True)
    ckpt = os.path.join(run, "checkpoints", "last.safetensors")
    images = [os.path.join(work, "data", "test", "bee", f"{i}.png") for i in range(2)]
    features_file = os.path.join(work, "features.safetensors")
    subprocess.run([resnet, "embed", "--checkpoint", ckpt, *images, "--out", features_file], check=True)
    state = {k: v for k, v in load_file(ckpt).items() if not k.startswith(("optimizer.", "preprocess."))}
    # Ours: the checkpoint's classifier on our pooled features (`resnet embed`).
    ours = load_file(features_file)["features"].double() @ state["fc.weight"].double().T + state["fc.bias"].double()
    model.fc = torch.nn.Linear(2048, 3)
    model.load_state_dict(state, strict=True)
    model.eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    worst, scale = 0.0, 0.0
    for path, row in zip(images, ours):
        x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)
        x = ((x - mean) / std).permute(2, 0, 1).unsqueeze(0)
        with torch.no_grad():
            logits = model(x)[0].double()
        worst = max(worst, (row - logits).abs().max().item())
        scale = max(scale, logits.abs().max().item())
        print(path, "ours", [round(v, 4) for v in row.tolist()], "PyTorch", [round(v, 4) for v in logits.tolist()])
    print(f"largest logit difference, ours against PyTorch: {worst:.2e} (largest logit {scale:.2f})")
    return 0 if worst <= 1e-4 * scale else 1


if __name__ == "__main__":
    sys.exit(main())
