"""PyTorch side of the CIFAR depth table: trains the paper's CIFAR ResNet (option A, the same
network as `bench/pytorch_reference.py` and ours) on an image-folder copy of CIFAR-10 with the
schedule of `resnet train --recipe cifar-paper --epochs E --milestones 0.5,0.75`.

Usage: python bench/pytorch_cifar_train.py DATA DEPTH EPOCHS --out DIR [--seed S] [--threads N]
  DATA: a folder with train/<class>/*.jpg and test/<class>/*.jpg (the JPEG CIFAR-10 copy)
  DIR:  the run's folder; `resnet experiment depth --out X` reads X/pytorch-resnet<DEPTH>/.

Batch 128, SGD lr 0.1, momentum 0.9, weight decay 1e-4, lr divided by 10 at 50% and 75% of the
iterations, 4-pixel zero pad + random 32 crop + horizontal flip, the per-pixel training mean
subtracted, He-normal initialisation. Writes DIR/metrics.jsonl, one line per epoch with our
metrics' field names (`epoch`, `epochs`, `iteration`, `lr`, `train_loss`, `train_error`,
`test_error`, `seconds`, `images_per_sec`; errors in percent), and DIR/checkpoint.pt after every
epoch: run the same command again to continue an interrupted run (a finished one is left as it
is). Needs torch and pillow in a virtual environment outside the repository; the project itself
never needs Python.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pytorch_reference import CifarResNet

BATCH = 128


def load_split(root, split, classes):
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, split, name)
        for file in sorted(os.listdir(folder)):
            with Image.open(os.path.join(folder, file)) as im:
                images.append(np.asarray(im.convert("RGB")))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return x, torch.tensor(labels)


def augment(x, gen):
    """4-pixel zero pad, a random 32x32 crop and a horizontal flip, per image."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=gen)
    dx = torch.randint(0, 9, (n,), generator=gen)
    out = torch.stack([padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32] for i in range(n)])
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def error_percent(model, x, y):
    model.eval()
    wrong = 0
    with torch.no_grad():
        for b in range(0, len(x), 500):
            wrong += (model(x[b:b + 500]).argmax(1) != y[b:b + 500]).sum().item()
    return 100.0 * wrong / len(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("depth", type=int)
    p.add_argument("epochs", type=int)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if (a.depth - 2) % 6 != 0 or a.depth < 8:
        p.error(f"depth {a.depth}: a CIFAR ResNet has 6n+2 layers (20, 32, 44, 56, 110, ...)")
    if a.epochs < 1:
        p.error("epochs: at least 1")
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    metrics_path = os.path.join(a.out, "metrics.jsonl")
    ckpt_path = os.path.join(a.out, "checkpoint.pt")

    classes = sorted(os.listdir(os.path.join(a.data, "train")))
    t0 = time.time()
    x_train, y_train = load_split(a.data, "train", classes)
    x_test, y_test = load_split(a.data, "test", classes)
    mean = x_train.mean(0, keepdim=True)
    # The paper subtracts the per-pixel mean; the constant scale only keeps the numbers small.
    x_train = (x_train - mean) / 64.0
    x_test = ((x_test - mean) / 64.0).contiguous(memory_format=torch.channels_last)
    print(f"loaded {len(x_train)} + {len(x_test)} images in {time.time() - t0:.0f} s", flush=True)

    torch.manual_seed(a.seed)
    model = CifarResNet(a.depth).to(memory_format=torch.channels_last)
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    steps = len(x_train) // BATCH
    total = a.epochs * steps
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [total // 2, total * 3 // 4], 0.1)
    gen = torch.Generator().manual_seed(a.seed)
    start = 0
    if os.path.exists(ckpt_path):
        state = torch.load(ckpt_path, weights_only=False)
        if state["depth"] != a.depth or state["epochs"] != a.epochs:
            raise SystemExit(f"{ckpt_path}: a run of depth {state['depth']} over {state['epochs']} epochs, "
                             f"not {a.depth} over {a.epochs}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        start = state["epoch"]
        print(f"resuming {a.out} after epoch {start}", flush=True)

    for epoch in range(start, a.epochs):
        model.train()
        t1 = time.time()
        perm = torch.randperm(len(x_train), generator=gen)
        wrong, loss_sum = 0, 0.0
        for b in range(steps):
            idx = perm[b * BATCH:(b + 1) * BATCH]
            x = augment(x_train[idx], gen).contiguous(memory_format=torch.channels_last)
            y = y_train[idx]
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            wrong += (out.argmax(1) != y).sum().item()
            loss_sum += loss.item()
        seconds = time.time() - t1
        row = {
            "epoch": epoch + 1,
            "epochs": a.epochs,
            "iteration": (epoch + 1) * steps,
            "lr": opt.param_groups[0]["lr"],
            "train_loss": loss_sum / steps,
            "train_error": 100.0 * wrong / (steps * BATCH),
            "test_error": error_percent(model, x_test, y_test),
            "seconds": seconds,
            "images_per_sec": steps * BATCH / seconds,
            "torch": torch.__version__,
        }
        state = {"depth": a.depth, "epochs": a.epochs, "epoch": epoch + 1, "model": model.state_dict(),
                 "opt": opt.state_dict(), "sched": sched.state_dict(), "gen": gen.get_state()}
        # The checkpoint before the metrics line, each through a temporary file: a run stopped
        # in between repeats no epoch's line.
        torch.save(state, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)
        lines = open(metrics_path).read().splitlines()[:epoch] if os.path.exists(metrics_path) else []
        with open(metrics_path + ".tmp", "w") as f:
            f.write("".join(line + "\n" for line in lines + [json.dumps(row)]))
        os.replace(metrics_path + ".tmp", metrics_path)
        print(f"epoch {epoch + 1}/{a.epochs} train error {row['train_error']:.2f}% test error "
              f"{row['test_error']:.2f}% {row['images_per_sec']:.0f} img/s {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
