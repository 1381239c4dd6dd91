"""Fixtures for crates/interop: PyTorch's logits for deterministic weights, and small genuine files.

Full ResNet-18/50 weight files are far too large to commit, so the weights and inputs come from a
generator that crates/interop/tests/common/mod.rs implements identically in Rust:

    seed(name)  = fnv1a64(utf8(name)) ^ SEED
    z_i         = splitmix64_mix(seed(name) + i * 0x9E3779B97F4A7C15), i = 1, 2, ...
    u_i         = (z_i >> 40) * 2^-24                      (exact in float32)
    value_i     = (u_i * 2 - 1) * scale + offset           (float32 arithmetic, in this order)

over the tensor's elements in row-major torchvision layout (OIHW kernels, NCHW inputs). `scale`
and `offset` depend on the tensor (see `rule`): Kaiming-uniform kernels, BN weights in [0.5, 1),
running means in [-0.2, 0.2), running variances in [0.5, 1.5) (always positive), so activations
stay well-conditioned through 50 layers. `num_batches_tracked` is set to 1000.

Writes into crates/interop/tests/fixtures/:
- generated.safetensors: for resnet18, resnet50 (torchvision) and resnet20 (CIFAR, option A):
  `<model>.logits` (eval mode), `<model>.features` (the classifier's input: fine-tuning tests put
  a new classifier on it), `<model>.checksums` (float64 sum of every state tensor, in
  state-dict order, then of the input) so a generator mismatch is told apart from a network one.
- tiny_basic.*, tiny_bottleneck.*: small networks written by `safetensors.torch.save_file`
  (float32, and float16/bfloat16 copies) and `torch.save` (pickle protocol 2, and 4), with
  `tiny_expected.safetensors` holding an input and PyTorch's eval-mode logits for each.
- malicious.pth: a `torch.save` archive whose pickle calls `os.system` when unpickled by Python.
and crates/interop/src/imagenet_classes.txt (torchvision's 1000 category names, in label order).

Regenerate (needs torch, torchvision, safetensors, numpy; never needed to build or test):
    python tools/interop/make_fixtures.py [generated]
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "crates", "interop", "tests", "fixtures")
CLASSES = os.path.join(ROOT, "crates", "interop", "src", "imagenet_classes.txt")

SEED = 2015
GAMMA = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def uniforms(seed, n):
    """splitmix64 outputs for counters 1..n, as float32 in [0, 1) with 24 random bits."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


def generate(name, shape, scale, offset):
    n = int(np.prod(shape)) if len(shape) else 1
    u = uniforms(fnv1a64(name) ^ SEED, n)
    # float32 scale/offset from float64 by one rounding, as `as f32` does in Rust.
    v = (u * np.float32(2.0) - np.float32(1.0)) * np.float32(scale) + np.float32(offset)
    return torch.from_numpy(v.reshape(shape).copy())


def rule(name, shape):
    """(scale, offset) of a state tensor; None for num_batches_tracked."""
    if name.endswith("num_batches_tracked"):
        return None
    if len(shape) == 4:
        return math.sqrt(6.0 / (shape[1] * shape[2] * shape[3])), 0.0
    if name == "fc.weight":
        return math.sqrt(3.0 / shape[1]), 0.0
    if name == "fc.bias":
        return 0.1, 0.0
    if name.endswith("running_mean"):
        return 0.2, 0.0
    if name.endswith("running_var"):
        return 0.5, 1.0
    if name.endswith("weight"):
        return 0.25, 0.75
    if name.endswith("bias"):
        return 0.1, 0.0
    raise ValueError(f"no rule for {name}")


def generated_state(model):
    out = {}
    for k, v in model.state_dict().items():
        r = rule(k, list(v.shape))
        out[k] = torch.full_like(v, 1000) if r is None else generate(k, list(v.shape), *r)
    return out


class PadShortcut(nn.Module):
    """Option A: subsample, zero-pad channels, (cout - cin) // 2 before and the rest after."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.before, self.after, self.stride = (cout - cin) // 2, cout - cin - (cout - cin) // 2, stride

    def forward(self, x):
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.before, self.after))


class Block(nn.Module):
    """torchvision's BasicBlock/Bottleneck (v1.5 stride placement), with option A or B shortcuts."""

    def __init__(self, bottleneck, cin, width, stride, shortcut):
        super().__init__()
        self.bottleneck = bottleneck
        cout = width * (4 if bottleneck else 1)
        if bottleneck:
            self.conv1 = nn.Conv2d(cin, width, 1, 1, 0, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1, 1, 0, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
        else:
            self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
        self.kind = "identity"
        if stride != 1 or cin != cout:
            self.kind = "projection" if shortcut == "B" else "pad"
        if self.kind == "projection":
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        elif self.kind == "pad":
            self.pad = PadShortcut(cin, cout, stride)  # no parameters: no state-dict keys

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        if self.bottleneck:
            y = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(y)))))
        else:
            y = self.bn2(self.conv2(y))
        if self.kind == "projection":
            x = self.downsample(x)
        elif self.kind == "pad":
            x = self.pad(x)
        return F.relu(y + x)


class Net(nn.Module):
    """A ResNet with torchvision's state-dict keys: ImageNet stem (7x7/2 + max pool) or CIFAR stem."""

    def __init__(self, imagenet, bottleneck, depths, widths, stem, shortcut, classes):
        super().__init__()
        self.imagenet = imagenet
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False) if imagenet else nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        cin = stem
        for s, (depth, width) in enumerate(zip(depths, widths)):
            blocks = []
            for i in range(depth):
                blocks.append(Block(bottleneck, cin, width, 2 if (i == 0 and s > 0) else 1, shortcut))
                cin = width * (4 if bottleneck else 1)
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.stages = len(depths)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.imagenet:
            x = F.max_pool2d(x, 3, 2, 1)
        for s in range(self.stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# (fixture name, model, batch, input side)
GENERATED = [
    ("resnet18", lambda: torchvision.models.resnet18(), 2, 224),
    ("resnet50", lambda: torchvision.models.resnet50(), 2, 224),
    ("resnet20", lambda: Net(False, False, [3, 3, 3], [16, 32, 64], 16, "A", 10), 4, 32),
]


def make_generated():
    tensors, meta = {}, {}
    for name, make, batch, side in GENERATED:
        model = make()
        state = generated_state(model)
        model.load_state_dict(state, strict=True)
        model.eval()
        x = generate("input", [batch, 3, side, side], 2.0, 0.0)
        features = []
        hook = model.fc.register_forward_hook(lambda module, inputs, output: features.append(inputs[0]))
        with torch.no_grad():
            logits = model(x)
        hook.remove()
        sums = [v.double().sum().item() for v in state.values()] + [x.double().sum().item()]
        tensors[f"{name}.logits"] = logits.contiguous()
        tensors[f"{name}.features"] = features[0].contiguous()
        tensors[f"{name}.checksums"] = torch.tensor(sums, dtype=torch.float64)
        meta[name] = {"batch": batch, "side": side}
        top2 = logits.topk(2, dim=1).values
        print(f"{name}: max |logit| {logits.abs().max().item():.3f}, top-1 {logits.argmax(1).tolist()}, "
              f"margins {(top2[:, 0] - top2[:, 1]).tolist()}")
    path = os.path.join(OUT, "generated.safetensors")
    save_file(tensors, path, metadata={"seed": str(SEED), "models": json.dumps(meta)})
    print(f"{path}: {os.path.getsize(path)} bytes")


TINY = [
    # CIFAR stem, basic blocks, option B projections where the shape changes.
    ("tiny_basic", lambda: Net(False, False, [1, 1, 1], [2, 4, 8], 2, "B", 10), 2, 12),
    # ImageNet stem, v1.5 bottlenecks, option B.
    ("tiny_bottleneck", lambda: Net(True, True, [1, 2], [2, 4], 4, "B", 5), 2, 32),
]


class Evil:
    """Runs a shell command when unpickled by Python (and must be refused by our reader)."""

    def __reduce__(self):
        return (os.system, ("echo this pickle ran a shell command",))


def make_tiny():
    expected = {}
    for i, (name, make, batch, side) in enumerate(TINY):
        torch.manual_seed(100 + i)
        model = make()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.3, 0.3)
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
                    m.num_batches_tracked.fill_(7)
        model.eval()
        x = torch.randn(batch, 3, side, side)
        with torch.no_grad():
            expected[f"{name}.input"] = x.permute(0, 2, 3, 1).contiguous()  # NHWC, as the Rust side uses
            expected[f"{name}.logits"] = model(x).contiguous()
        sd = model.state_dict()
        save_file(sd, os.path.join(OUT, f"{name}.safetensors"))
        torch.save(sd, os.path.join(OUT, f"{name}.pth"))
        if name == "tiny_basic":
            save_file({k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()},
                      os.path.join(OUT, f"{name}.f16.safetensors"))
            save_file({k: (v.bfloat16() if v.is_floating_point() else v) for k, v in sd.items()},
                      os.path.join(OUT, f"{name}.bf16.safetensors"))
            torch.save(sd, os.path.join(OUT, f"{name}.proto4.pth"), pickle_protocol=4)
    save_file(expected, os.path.join(OUT, "tiny_expected.safetensors"))
    torch.save({"conv1.weight": Evil()}, os.path.join(OUT, "malicious.pth"))


def make_classes():
    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    assert len(categories) == 1000
    with open(CLASSES, "w", encoding="utf-8") as f:
        f.write("\n".join(categories) + "\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    # `generated` alone: the fixtures whose weights do not depend on torch's random generator.
    only_generated = sys.argv[1:] == ["generated"]
    make_generated()
    if not only_generated:
        make_tiny()
        make_classes()
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"{OUT}: {total} bytes in all")


if __name__ == "__main__":
    main()
