#!/usr/bin/python3
"""Write PyTorch reference tensors for the op tests into test/fixtures/*.safetensors.

Run with Debian's PyTorch 1.13 (package python3-torch):  /usr/bin/python3 scripts/make-fixtures.py

Each case stores its inputs (as float32, the engine's dtype), the upstream gradient dL/dy it used,
the output y and the gradient of every input. Inputs are rounded to float32 first; forward and
backward then run in float64, so the references are exact to float32 rounding and the tests can
use tight tolerances. Seeds are fixed and the files are written byte-for-byte the same on every
run (the script is idempotent).

Layout of one file: tensors "<case>/in<i>", "<case>/gy", "<case>/out", "<case>/grad<i>"; the
header's __metadata__ has "cases": a JSON list of {"name", "config"}.
"""
import json
import os
import struct
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "test", "fixtures")

DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}


def write_safetensors(path, tensors, metadata):
    """Minimal safetensors writer (no dependency on the safetensors package)."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name, t in tensors:
        t = t.detach().contiguous().cpu()
        raw = t.numpy().tobytes()  # little-endian on x86-64
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


class FixtureFile:
    def __init__(self, name, seed):
        self.name = name
        self.tensors = []
        self.cases = []
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape):
        return torch.randn(tuple(shape), generator=self.gen, dtype=torch.float32)

    def rand(self, *shape, low=0.0, high=1.0):
        return low + (high - low) * torch.rand(tuple(shape), generator=self.gen, dtype=torch.float32)

    def case(self, name, fn, inputs, config=None, grad_inputs=None):
        """Run fn on float64 copies of float32 inputs; record output and input gradients."""
        grad_inputs = grad_inputs if grad_inputs is not None else [True] * len(inputs)
        xs = []
        for x, g in zip(inputs, grad_inputs):
            if x.dtype.is_floating_point:
                x64 = x.to(torch.float32).double()
                xs.append(x64.requires_grad_(g))
            else:
                xs.append(x)
        y = fn(*xs)
        gy = self.randn(*y.shape).double()
        if any(x.requires_grad for x in xs):
            y.backward(gy)
        for i, x in enumerate(inputs):
            self.tensors.append((f"{name}/in{i}", x.float() if x.dtype.is_floating_point else x))
        self.tensors.append((f"{name}/gy", gy.float()))
        self.tensors.append((f"{name}/out", y.detach().float()))
        for i, x in enumerate(xs):
            if x.dtype.is_floating_point and x.requires_grad:
                self.tensors.append((f"{name}/grad{i}", x.grad.float()))
        self.cases.append({"name": name, "config": config or {}})

    def write(self):
        os.makedirs(OUT_DIR, exist_ok=True)
        path = os.path.join(OUT_DIR, self.name + ".safetensors")
        write_safetensors(path, self.tensors, {"cases": json.dumps(self.cases, separators=(",", ":")), "torch": torch.__version__})
        print(f"wrote {os.path.relpath(path, ROOT)}: {len(self.cases)} cases")


def core_ops():
    f = FixtureFile("core", seed=3)
    # Broadcasting binary ops: same shape, row vector, column vector, scalar, rank mismatch.
    shapes = [((2, 3), (2, 3)), ((4, 3), (3,)), ((4, 1), (1, 5)), ((2, 3, 4), (1,)), ((2, 1, 4), (3, 1)), ((5,), (2, 3, 5))]
    for i, (sa, sb) in enumerate(shapes):
        a, b = f.randn(*sa), f.randn(*sb)
        f.case(f"add_{i}", lambda x, y: x + y, [a, b], {"a": sa, "b": sb})
        f.case(f"sub_{i}", lambda x, y: x - y, [a, b], {"a": sa, "b": sb})
        f.case(f"mul_{i}", lambda x, y: x * y, [a, b], {"a": sa, "b": sb})
        bpos = f.rand(*sb, low=0.5, high=2.0) * torch.where(f.rand(*sb) > 0.5, 1.0, -1.0)
        f.case(f"div_{i}", lambda x, y: x / y, [a, bpos], {"a": sa, "b": sb})
    x = f.randn(3, 4)
    f.case("neg", lambda t: -t, [x])
    f.case("exp", torch.exp, [x])
    pos = f.rand(3, 4, low=0.2, high=3.0)
    f.case("log", torch.log, [pos])
    f.case("sqrt", torch.sqrt, [pos])
    f.case("pow_3", lambda t: t ** 3, [x], {"p": 3})
    f.case("pow_0.5", lambda t: t ** 0.5, [pos], {"p": 0.5})
    f.case("pow_-2", lambda t: t ** -2, [pos], {"p": -2})
    t = f.randn(2, 3, 4, 5)
    f.case("sum_all", lambda u: u.sum(), [t], {"axes": None, "keepdim": False})
    f.case("sum_1", lambda u: u.sum(dim=1), [t], {"axes": [1], "keepdim": False})
    f.case("sum_0_2_keep", lambda u: u.sum(dim=(0, 2), keepdim=True), [t], {"axes": [0, 2], "keepdim": True})
    f.case("mean_all", lambda u: u.mean(), [t], {"axes": None, "keepdim": False})
    f.case("mean_2_3_keep", lambda u: u.mean(dim=(2, 3), keepdim=True), [t], {"axes": [2, 3], "keepdim": True})
    f.case("mean_-1", lambda u: u.mean(dim=-1), [t], {"axes": [-1], "keepdim": False})
    f.case("max_1", lambda u: u.max(dim=1).values, [t], {"axis": 1, "keepdim": False})
    f.case("max_-1_keep", lambda u: u.max(dim=-1, keepdim=True).values, [t], {"axis": -1, "keepdim": True})
    f.case("matmul_2d", torch.matmul, [f.randn(5, 7), f.randn(7, 3)])
    f.case("matmul_2d_large", torch.matmul, [f.randn(33, 70), f.randn(70, 19)])
    f.case("matmul_3d", torch.matmul, [f.randn(3, 4, 6), f.randn(3, 6, 5)])
    f.case("permute_0_2_3_1", lambda u: u.permute(0, 2, 3, 1), [t], {"perm": [0, 2, 3, 1]})
    f.case("transpose_1_3", lambda u: u.transpose(1, 3), [t], {"dim0": 1, "dim1": 3})
    f.write()


GROUPS = {"core": core_ops}

if __name__ == "__main__":
    torch.use_deterministic_algorithms(True)
    wanted = sys.argv[1:] or list(GROUPS)
    for g in wanted:
        GROUPS[g]()
