"""Files for test/pth.test.ts, written by PyTorch itself (Debian python3-torch, torchvision):

  make-pth.py torchvision DIR   torchvision mobilenet_v2 state dicts as torch.save writes them
                                (zip and legacy layouts, wrapped, float16, DataParallel keys),
                                an input batch and PyTorch's eval logits for each
  make-pth.py resave IN OUT     our export (safetensors) loaded into torch and torch.save'd (zip)
                                and OUT.legacy (legacy layout)
  make-pth.py bad DIR           files that must be refused: a pickle whose __reduce__ calls
                                os.system, a complex-valued storage, a ResNet's state dict

Raw float32 arrays are written with numpy's tofile (little-endian, C order).
"""
import json
import os
import struct
import sys

import torch
import torchvision


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    kinds = {"F32": torch.float32, "I64": torch.int64}
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=kinds[entry["dtype"]]) if end > begin else torch.zeros(0, dtype=kinds[entry["dtype"]])
        out[name] = t.reshape(entry["shape"]).clone()
    return out


def logits(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def torchvision_files(out):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    x.numpy().tofile(os.path.join(out, "input.f32"))
    cases = {}
    for name, width in [("full", 1.0), ("narrow", 0.35)]:
        model = torchvision.models.mobilenet_v2(width_mult=width, num_classes=1000 if width == 1.0 else 10)
        # A few train-mode passes move BatchNorm's running statistics away from (0, 1).
        model.train()
        with torch.no_grad():
            for _ in range(2):
                model(torch.rand(4, 3, 64, 64))
        cases[name] = model
    full, narrow = cases["full"], cases["narrow"]
    torch.save(full.state_dict(), os.path.join(out, "zip.pth"))
    torch.save(full.state_dict(), os.path.join(out, "legacy.pth"), _use_new_zipfile_serialization=False)
    logits(full, x).numpy().tofile(os.path.join(out, "full.f32"))
    torch.save({"state_dict": narrow.state_dict(), "epoch": 3, "optimizer": {"lr": 0.1}}, os.path.join(out, "wrapped.pth"))
    torch.save({"model": {"module." + k: v for k, v in narrow.state_dict().items()}}, os.path.join(out, "dataparallel.pth"))
    logits(narrow, x).numpy().tofile(os.path.join(out, "narrow.f32"))
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in narrow.state_dict().items()}
    torch.save(half, os.path.join(out, "half.pth"))
    narrow.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in half.items()})
    logits(narrow, x).numpy().tofile(os.path.join(out, "half.f32"))


def resave(source, out):
    state = read_safetensors(source)
    torch.save(state, out)
    torch.save(state, out + ".legacy", _use_new_zipfile_serialization=False)


class Exploit:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def bad_files(out):
    marker = os.path.join(out, "exploited")
    torch.save({"features.0.0.weight": torch.zeros(2), "payload": Exploit("touch " + marker)}, os.path.join(out, "evil.pth"))
    torch.save({"features.0.0.weight": torch.zeros(2, dtype=torch.complex64)}, os.path.join(out, "complex.pth"))
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), os.path.join(out, "resnet18.pth"))


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "torchvision":
        torchvision_files(sys.argv[2])
    elif command == "resave":
        resave(sys.argv[2], sys.argv[3])
    elif command == "bad":
        bad_files(sys.argv[2])
    else:
        sys.exit("usage: make-pth.py torchvision DIR | resave IN OUT | bad DIR")
