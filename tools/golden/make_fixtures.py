"""Golden fixtures: small networks of every kind built in PyTorch with fixed weights and inputs.

Writes crates/models/tests/fixtures/<name>.safetensors holding, for one training-mode forward and
backward pass: the input (NHWC), labels, every parameter (torchvision layout), the initial and
updated batch-norm running statistics, the logits, the loss, every parameter gradient, and the
eval-mode logits after the update. The Rust test `crates/models/tests/golden.rs` rebuilds the same
network from the metadata and compares everything.

Regenerate (needs torch and safetensors, never needed to build or test):
    python tools/golden/make_fixtures.py
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "models", "tests", "fixtures")


class PadShortcut(nn.Module):
    """Option A: subsample, zero-pad channels symmetrically (extra one after)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.before = (cout - cin) // 2
        self.after = cout - cin - self.before
        self.stride = stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.before, self.after))


class Block(nn.Module):
    def __init__(self, kind, cin, width, stride, shortcut, placement):
        super().__init__()
        self.kind = kind
        cout = width * (4 if kind == "Bottleneck" else 1)
        if kind == "Basic":
            self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
        else:
            s1, s2 = (stride, 1) if placement == "V1" else (1, stride)
            self.conv1 = nn.Conv2d(cin, width, 1, s1, 0, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, s2, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1, 1, 0, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = shortcut
        if shortcut == "Projection":
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))
        elif shortcut == "Pad":
            self.pad = PadShortcut(cin, cout, stride)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        if self.kind == "Basic":
            y = self.bn2(self.conv2(y))
        else:
            y = F.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
        if self.shortcut == "Identity":
            y = y + x
        elif self.shortcut == "Projection":
            y = y + self.downsample(x)
        elif self.shortcut == "Pad":
            y = y + self.pad(x)
        return F.relu(y)


class Net(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s
        if s["family"] == "ImageNet":
            self.conv1 = nn.Conv2d(s["in_channels"], s["stem_width"], 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(s["in_channels"], s["stem_width"], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(s["stem_width"])
        cin = s["stem_width"]
        exp = 4 if s["block"] == "Bottleneck" else 1
        for st, (depth, width) in enumerate(zip(s["depths"], s["widths"])):
            blocks = []
            cout = width * exp
            for i in range(depth):
                stride = 2 if (i == 0 and st > 0) else 1
                changes = stride != 1 or cin != cout
                if not s["residual"]:
                    sc = "None"
                elif s["shortcut"] == "C" or (s["shortcut"] == "B" and changes):
                    sc = "Projection"
                elif s["shortcut"] == "A" and changes:
                    sc = "Pad"
                else:
                    sc = "Identity"
                blocks.append(Block(s["block"], cin, width, stride, sc, s["stride_placement"]))
                cin = cout
            setattr(self, f"layer{st + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, s["num_classes"])

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.s["family"] == "ImageNet":
            x = F.max_pool2d(x, 3, 2, 1)
        for st in range(len(self.s["depths"])):
            x = getattr(self, f"layer{st + 1}")(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def spec(name, family, block, depths, widths, stem, residual=True, shortcut="A", placement="V1", classes=10, cin=3):
    return dict(name=name, family=family, block=block, depths=depths, widths=widths, stem_width=stem,
                residual=residual, shortcut=shortcut, stride_placement=placement, num_classes=classes,
                in_channels=cin)


CASES = [
    (spec("cifar_a", "Cifar", "Basic", [2, 2, 2], [4, 8, 16], 4), 4, 16),
    (spec("cifar_b", "Cifar", "Basic", [2, 2, 2], [4, 8, 16], 4, shortcut="B"), 4, 16),
    (spec("cifar_c", "Cifar", "Basic", [2, 2, 2], [4, 8, 16], 4, shortcut="C"), 4, 16),
    (spec("cifar_plain", "Cifar", "Basic", [2, 2, 2], [4, 8, 16], 4, residual=False), 4, 16),
    (spec("imagenet_basic_b", "ImageNet", "Basic", [1, 2], [4, 8], 4, shortcut="B", classes=7), 3, 40),
    (spec("bottleneck_v1_b", "ImageNet", "Bottleneck", [1, 2], [2, 4], 4, shortcut="B", classes=5, cin=1), 3, 36),
    (spec("bottleneck_v15_b", "ImageNet", "Bottleneck", [1, 2], [2, 4], 4, shortcut="B", placement="V1_5", classes=5, cin=1), 3, 36),
    (spec("bottleneck_v1_a", "ImageNet", "Bottleneck", [1, 2], [2, 4], 4, shortcut="A", classes=5), 3, 33),
    # Channels in multiples of 16 and enough 4x4 output tiles (32 or more per layer) that every
    # 3x3 stride-1 layer runs on the Winograd kernels.
    (spec("cifar_wide_b", "Cifar", "Basic", [1, 1, 1], [16, 32, 32], 16, shortcut="B"), 8, 32),
]


def to_ours(name, t):
    # Convolution kernels: torchvision [out, in, kh, kw] -> ours [kh, kw, in, out].
    return t.permute(2, 3, 1, 0).contiguous() if t.dim() == 4 else t


def main():
    os.makedirs(OUT, exist_ok=True)
    for seed, (s, batch, hw) in enumerate(CASES):
        torch.manual_seed(1000 + seed)
        net = Net(s)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight)
                elif isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.3, 0.3)
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.3)
                    m.bias.uniform_(-0.2, 0.2)
        tensors = {}
        for k, v in net.state_dict().items():
            if k.endswith("num_batches_tracked"):
                continue
            if "running" in k:
                tensors["init." + k] = v.clone()
            else:
                tensors["param." + k] = to_ours(k, v.clone())
        x = torch.randn(batch, s["in_channels"], hw, hw)
        labels = torch.arange(batch) % s["num_classes"]
        net.train()
        logits = net(x)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        for k, p in net.named_parameters():
            tensors["grad." + k] = to_ours(k, p.grad.clone())
        for k, v in net.state_dict().items():
            if "running" in k:
                tensors["updated." + k] = v.clone()
        net.eval()
        with torch.no_grad():
            eval_logits = net(x)
        tensors["input"] = x.permute(0, 2, 3, 1).contiguous()
        tensors["labels"] = labels.to(torch.int64)
        tensors["logits"] = logits.detach()
        tensors["loss"] = loss.detach().reshape(1)
        tensors["eval_logits"] = eval_logits
        path = os.path.join(OUT, s["name"] + ".safetensors")
        save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"spec": json.dumps(s)})
        print(f"{path}: {os.path.getsize(path)} bytes, loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
