#!/usr/bin/python3
"""torchvision MobileNetV2 <-> safetensors, for interop with mobilenet-ts.

Debian packages: python3-torch (1.13), python3-torchvision (0.14). Run with /usr/bin/python3.

  # Convert torchvision weights (e.g. the pretrained mobilenet_v2-b0353104.pth) for mobilenet-ts:
  /usr/bin/python3 scripts/export-torchvision.py --weights mobilenet_v2-b0353104.pth --out mnv2.safetensors

  # Check that a file written by `mobilenet export` loads into PyTorch (torchvision's
  # mobilenet_v2 for v2, with a one-channel stem for grayscale models; this repository's
  # PyTorch MobileNetV1 for v1 and the full-convolution baseline) and gives the expected logits.
  # The model is built from the file's metadata; REFERENCE holds an input (@input) and the
  # logits the exporting engine computed for it in eval mode (@logits_eval):
  /usr/bin/python3 scripts/export-torchvision.py --check exported.safetensors --against REFERENCE

  # Regenerate the committed interop fixture (fixed seed, non-trivial BatchNorm statistics):
  /usr/bin/python3 scripts/export-torchvision.py --fixture
"""
import argparse
import json
import os
import struct
import sys

import torch
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importlib import import_module  # noqa: E402

fixtures = import_module("make-fixtures")

FIXTURE = os.path.join(ROOT, "test", "fixtures", "torchvision_v2.safetensors")
FIXTURE_CONFIG = {"width_mult": 0.35, "num_classes": 100, "batch": 2, "resolution": 64}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    dtypes = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = bytearray(raw[8 + n + b : 8 + n + e])
        out[key] = torch.frombuffer(buf, dtype=dtypes[info["dtype"]]).reshape(info["shape"]) if e > b else torch.zeros(info["shape"], dtype=dtypes[info["dtype"]])
    return out, header.get("__metadata__", {})


def make_fixture():
    cfg = FIXTURE_CONFIG
    torch.manual_seed(30)
    model = torchvision.models.mobilenet_v2(weights=None, width_mult=cfg["width_mult"], num_classes=cfg["num_classes"])
    gen = torch.Generator().manual_seed(31)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.num_batches_tracked.fill_(7)
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.05)
    x = torch.rand((cfg["batch"], 3, cfg["resolution"], cfg["resolution"]), generator=gen)
    tensors = [(k, v) for k, v in model.state_dict().items()]
    model_eval = model.double().eval()
    with torch.no_grad():
        logits_eval = model_eval(x.double()).float()
        model.train()
        model.classifier[0].p = 0.0
        logits_train = model(x.double()).float()
    extras = [("@input", x), ("@logits_eval", logits_eval), ("@logits_train", logits_train)]
    fixtures.write_safetensors(FIXTURE, tensors + extras, {"config": json.dumps(cfg), "torchvision": torchvision.__version__})
    print(f"wrote {os.path.relpath(FIXTURE, ROOT)}")


def convert(weights, out, width_mult, num_classes):
    model = torchvision.models.mobilenet_v2(weights=None, width_mult=width_mult, num_classes=num_classes)
    model.load_state_dict(torch.load(weights, map_location="cpu"))
    fixtures.write_safetensors(out, list(model.state_dict().items()), {"source": os.path.basename(weights), "width_mult": str(width_mult), "num_classes": str(num_classes)})
    print(f"wrote {out}")


def build(meta, fallback):
    """A PyTorch model for a file's metadata (written by `mobilenet export`), else `fallback`'s config."""
    if "model" not in meta:
        return torchvision.models.mobilenet_v2(weights=None, width_mult=fallback["width_mult"], num_classes=fallback["num_classes"])
    arch, alpha, classes, channels = meta["model"], float(meta["alpha"]), int(meta["num_classes"]), int(meta.get("in_channels", "3"))
    stem_stride = int(meta.get("stem_stride", "2"))
    if arch in ("v1", "baseline", "shallow"):
        return fixtures.MobileNetV1(alpha, classes, in_channels=channels, full_conv=arch == "baseline", stem_stride=stem_stride, shallow=arch == "shallow")
    # V2; an expansion factor other than 6 is torchvision's inverted_residual_setting with t replaced.
    t = float(meta.get("expansion", "6"))
    setting = [[1, 16, 1, 1]] + [[t, c, n, s] for _, c, n, s in [[6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]]
    model = torchvision.models.mobilenet_v2(weights=None, width_mult=alpha, num_classes=classes, inverted_residual_setting=setting)
    if channels != 3 or stem_stride != 2:
        # What a PyTorch user does for grayscale input or small images: the same stem with one
        # input channel, or stride 1.
        stem = model.features[0][0]
        model.features[0][0] = torch.nn.Conv2d(channels, stem.out_channels, 3, stem_stride, 1, bias=False)
    return model


def check(path, against):
    ref, ref_meta = read_safetensors(against)
    ours, meta = read_safetensors(path)
    model = build(meta, json.loads(ref_meta.get("config", "{}")))
    model.load_state_dict({k: v for k, v in ours.items() if not k.startswith("@")})
    model = model.double().eval()
    with torch.no_grad():
        logits = model(ref["@input"].double()).float()
    err = (logits - ref["@logits_eval"]).abs().max().item()
    ok = torch.allclose(logits, ref["@logits_eval"], rtol=1e-4, atol=1e-5)
    print(f"PyTorch loaded {path} ({meta.get('model', 'v2')}, {tuple(ref['@input'].shape)} input): max |logits difference| = {err:.3g} -> {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", action="store_true")
    ap.add_argument("--weights")
    ap.add_argument("--out")
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--check")
    ap.add_argument("--against", default=FIXTURE)
    a = ap.parse_args()
    if a.fixture:
        make_fixture()
    elif a.weights and a.out:
        convert(a.weights, a.out, a.width_mult, a.num_classes)
    elif a.check:
        sys.exit(check(a.check, a.against))
    else:
        ap.print_help()
