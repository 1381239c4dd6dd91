"""PyTorch side of the benchmark comparison: the same configurations `resnet bench` runs.

Usage: python bench/pytorch_reference.py CONFIG MODE [--steps N] [--warmup N] [--threads N]
  CONFIG: train-resnet20 | train-resnet56 | train-resnet110 | train-resnet18 | train-resnet50 |
          train-resnet101 | infer-resnet20 | infer-resnet50-b16 | infer-resnet50-b1
  MODE:   fp32 | fp32-cl | bf16   (NCHW fp32, channels-last fp32, channels-last bf16 autocast)
Prints one JSON line: {"config", "mode", "images_per_sec", "ms_per_step", "peak_rss_bytes"}.

Needs torch and torchvision (a virtual environment outside the repository); the project itself
never needs Python. The CIFAR networks are the paper's (option A shortcuts, symmetric channel
padding), identical to ours; the ImageNet networks are torchvision's (our resnet18 and
resnet50-v1.5, resnet101-v1.5).
"""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class PadShortcut(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.before = (cout - cin) // 2
        self.after = cout - cin - self.before

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.before, self.after))


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = PadShortcut(cin, cout) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth, classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in [(16, 1), (32, 2), (64, 2)]:
            for i in range(n):
                layers.append(Basic(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


CONFIGS = {
    "train-resnet20": ("cifar", 20, "train", 128, 32),
    "train-resnet56": ("cifar", 56, "train", 128, 32),
    "train-resnet110": ("cifar", 110, "train", 128, 32),
    "train-resnet18": ("imagenet", 18, "train", 32, 224),
    "train-resnet50": ("imagenet", 50, "train", 32, 224),
    "train-resnet101": ("imagenet", 101, "train", 32, 224),
    "infer-resnet20": ("cifar", 20, "infer", 256, 32),
    "infer-resnet50-b16": ("imagenet", 50, "infer", 16, 224),
    "infer-resnet50-b1": ("imagenet", 50, "infer", 1, 224),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("config", choices=sorted(CONFIGS))
    p.add_argument("mode", choices=["fp32", "fp32-cl", "bf16"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    family, depth, what, batch, size = CONFIGS[a.config]
    model = CifarResNet(depth) if family == "cifar" else getattr(torchvision.models, f"resnet{depth}")()
    classes = 10 if family == "cifar" else 1000
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, classes, (batch,))
    if a.mode != "fp32":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.mode == "bf16")
    if what == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.inference_mode(), autocast:
                model(x)

    for _ in range(a.warmup):
        step()
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"config": a.config, "mode": a.mode, "images_per_sec": batch * a.steps / dt,
                      "ms_per_step": 1e3 * dt / a.steps, "peak_rss_bytes": rss, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
