#!/usr/bin/python3
"""Train mobilenet-ts's recipe in PyTorch, from scratch, to compare speed and accuracy.

The same model (built as scripts/export-torchvision.py builds it from an exported file), the
same optimizer (SGD, Nesterov momentum 0.9, weight decay on all but BatchNorm, biases and
depthwise filters), the same schedule (one-cycle: torch.optim.lr_scheduler.OneCycleLR over every
batch of every epoch, its defaults), the same loss (cross-entropy with label smoothing) and the
same augmentation flags as `mobilenet train` (random horizontal flips, zero-padded random crops,
random erasing), on the IDX files of Fashion-MNIST or MNIST. Inputs are normalised with the mean
and standard deviation of the training images, as `mobilenet train` does. Each epoch ends with
an evaluation on the test images and one line in the same layout as `mobilenet train`'s; the
time is the wall time from the first batch, evaluations included. Debian packages: python3-torch
(1.13), python3-torchvision (0.14) for V2; libopenblas0-pthread for a fast GEMM.

  /usr/bin/python3 scripts/train-torch.py --threads 2 --csv runs/torch-default.csv
  /usr/bin/python3 scripts/train-torch.py --data-path /usr/share/datasets/fashion-mnist --stem-stride 1 --epochs 24

`--csv FILE` writes one row per epoch (epoch, seconds, train loss and top-1, test loss and
top-1); `node --import tsx/esm scripts/plot-curves.ts OUT.png ours=RUN torch=FILE` draws it
beside a `mobilenet train` run's curve, against wall time.
"""
import argparse
import csv
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importlib import import_module  # noqa: E402

ddp = import_module("train-ddp")  # load_split, is_no_decay, fail
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

BUNDLED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "fashion-mnist-subset")


def augment(x, a, gen, mean, std):
    """Per image: a random crop of the zero-padded image, a flip with probability 1/2, then
    normalisation, then random erasing (value 0 after normalising, as torchvision's reference
    script and `mobilenet train` do)."""
    n, _, h, w = x.shape
    if a.crop_padding > 0:
        p = a.crop_padding
        # Zero padding before normalisation is the training images' mean after it: pad the raw pixels.
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    if a.hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    x = (x - mean) / std
    if a.random_erasing > 0:
        # torchvision's RandomErasing: area 2-33% of the image, aspect ratio 0.3-3.3, value 0.
        for i in range(n):
            if torch.rand(1, generator=gen).item() >= a.random_erasing:
                continue
            for _ in range(10):
                area = h * w * (0.02 + 0.31 * torch.rand(1, generator=gen).item())
                ratio = math.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * torch.rand(1, generator=gen).item())
                eh, ew = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
                if eh < h and ew < w:
                    y0 = int(torch.randint(0, h - eh + 1, (1,), generator=gen))
                    x0 = int(torch.randint(0, w - ew + 1, (1,), generator=gen))
                    x[i, :, y0 : y0 + eh, x0 : x0 + ew] = 0
                    break
    return x


@torch.no_grad()
def init_as_mobilenet_ts(model):
    """src/nn/init.ts's policy (torchvision's for MobileNet): convolutions Kaiming normal with
    fan-out, linear weights N(0, 0.01), biases 0, BatchNorm gamma 1 and beta 0."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, 0, 0.01)
            torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)


@torch.no_grad()
def evaluate(model, x, y, mean, std, batch):
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, x.shape[0], batch):
        logits = model((x[i : i + batch] - mean) / std)
        loss += F.cross_entropy(logits, y[i : i + batch], reduction="sum").item()
        correct += (logits.argmax(1) == y[i : i + batch]).sum().item()
    model.train()
    return loss / x.shape[0], correct / x.shape[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-path", default=BUNDLED, help="folder with the four IDX files (default: the bundled subset)")
    ap.add_argument("--model", choices=["shallow", "v1", "baseline", "v2"], default="shallow")
    ap.add_argument("--alpha", type=float, default=0.35)
    ap.add_argument("--stem-stride", type=int, choices=[1, 2], default=2)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("-b", "--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1, help="the one-cycle peak")
    ap.add_argument("--wd", type=float, default=5e-5)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--no-hflip", dest="hflip", action="store_false")
    ap.add_argument("--crop-padding", type=int, default=0)
    ap.add_argument("--random-erasing", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", choices=["mobilenet-ts", "pytorch"], default="mobilenet-ts", help="mobilenet-ts: the same initialisation as ours (Kaiming normal, fan-out); pytorch: each layer's own default")
    ap.add_argument("--csv", help="write one row per epoch here")
    ap.add_argument("--max-steps", type=int, default=0, help="at most this many batches per epoch (0: all; for a quick check)")
    a = ap.parse_args()
    for flag, value, ok, expected in [
        ("--epochs", a.epochs, a.epochs >= 1, "an integer >= 1"),
        ("--batch-size", a.batch_size, a.batch_size >= 1, "an integer >= 1"),
        ("--threads", a.threads, a.threads >= 1, "an integer >= 1"),
        ("--max-steps", a.max_steps, a.max_steps >= 0, "an integer >= 0"),
        ("--alpha", a.alpha, a.alpha > 0, "a number > 0"),
        ("--lr", a.lr, a.lr > 0, "a number > 0"),
        ("--crop-padding", a.crop_padding, a.crop_padding >= 0, "an integer >= 0"),
        ("--random-erasing", a.random_erasing, 0 <= a.random_erasing <= 1, "a number in [0, 1]"),
    ]:
        if not ok:
            ddp.fail(f"{flag} must be {expected}, got {value}")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)

    # The images as pixels / 255 (normalised below with the training images' statistics).
    x_train, y_train = ddp.load_split(a.data_path, "train", 0.0, 1.0).tensors
    x_test, y_test = ddp.load_split(a.data_path, "test", 0.0, 1.0).tensors
    mean, std = x_train.mean(), x_train.std(unbiased=False)  # as mobilenet train: the population std
    classes = int(y_train.max().item()) + 1
    meta = {"model": a.model, "alpha": str(a.alpha), "num_classes": str(classes), "in_channels": "1", "stem_stride": str(a.stem_stride)}
    model = import_module("export-torchvision").build(meta, None)
    if a.init == "mobilenet-ts":
        init_as_mobilenet_ts(model)
    decay = [p for n, p in model.named_parameters() if not ddp.is_no_decay(n, p)]
    no_decay = [p for n, p in model.named_parameters() if ddp.is_no_decay(n, p)]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, momentum=0.9, nesterov=True)
    steps = math.ceil(x_train.shape[0] / a.batch_size)
    if a.max_steps > 0:
        steps = min(steps, a.max_steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.epochs * steps)
    params = sum(p.numel() for p in model.parameters())
    print(f"PyTorch {torch.__version__}, {a.threads} thread(s): {a.model} alpha {a.alpha} stem stride {a.stem_stride} ({params:,} parameters, {a.init} init), "
          f"{x_train.shape[0]} train / {x_test.shape[0]} test images, {a.epochs} epochs of {steps} batches", flush=True)

    rows = []
    start = time.perf_counter()
    for epoch in range(a.epochs):
        order = torch.randperm(x_train.shape[0], generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for s in range(steps):
            idx = order[s * a.batch_size : (s + 1) * a.batch_size]
            x = augment(x_train[idx], a, gen, mean, std)
            y = y_train[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=a.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += y.numel()
            correct += (logits.argmax(1) == y).sum().item()
            loss_sum += loss.item() * y.numel()
        test_loss, test_acc = evaluate(model, x_test, y_test, mean, std, 250)
        seconds = time.perf_counter() - start
        rows.append([epoch + 1, round(seconds, 2), round(loss_sum / total, 4), round(100 * correct / total, 2), round(test_loss, 4), round(100 * test_acc, 2)])
        print(f"epoch {epoch + 1}/{a.epochs}  train loss {loss_sum / total:.4f} top1 {100 * correct / total:.2f}%  |  test loss {test_loss:.4f} top1 {100 * test_acc:.2f}%  |  {seconds:.1f}s from the start", flush=True)
        if a.csv:
            os.makedirs(os.path.dirname(os.path.abspath(a.csv)), exist_ok=True)
            with open(a.csv + ".tmp", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["epoch", "seconds", "train_loss", "train_top1", "test_loss", "test_top1"])
                w.writerows(rows)
            os.replace(a.csv + ".tmp", a.csv)


if __name__ == "__main__":
    main()
