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

    def extra(self, name, key, tensor):
        """Store an additional tensor for a case (e.g. BatchNorm running statistics)."""
        self.tensors.append((f"{name}/{key}", tensor.detach().float()))

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


def conv_ops():
    f = FixtureFile("conv", seed=4)
    # (name, N, Cin, H, W, Cout, k, stride, padding, dilation, groups, bias)
    convs = [
        ("k3_s1_p1", 2, 3, 7, 6, 5, 3, 1, 1, 1, 1, True),
        ("k3_s2_p1", 1, 3, 9, 9, 8, 3, 2, 1, 1, 1, False),
        ("k3_s2_p0_odd", 2, 4, 11, 7, 6, 3, 2, 0, 1, 1, True),
        ("k1_s1_p0", 2, 6, 5, 5, 7, 1, 1, 0, 1, 1, True),
        ("k5_s1_p2", 1, 2, 8, 8, 3, 5, 1, 2, 1, 1, True),
        ("k3_groups2", 2, 4, 6, 6, 6, 3, 1, 1, 1, 2, True),
        ("k3_dilation2", 1, 3, 9, 9, 4, 3, 1, 2, 2, 1, False),
        ("k2_s2_p0", 1, 3, 6, 6, 4, 2, 2, 0, 1, 1, True),
    ]
    for name, n, cin, h, w, cout, k, s, p, d, g, bias in convs:
        x = f.randn(n, cin, h, w)
        wt = f.randn(cout, cin // g, k, k) * 0.5
        cfg = {"stride": s, "padding": p, "dilation": d, "groups": g, "bias": bias}
        if bias:
            f.case("conv2d_" + name, lambda a, b, c: F.conv2d(a, b, c, stride=s, padding=p, dilation=d, groups=g), [x, wt, f.randn(cout)], cfg)
        else:
            f.case("conv2d_" + name, lambda a, b: F.conv2d(a, b, None, stride=s, padding=p, dilation=d, groups=g), [x, wt], cfg)
    # Depthwise: groups = channels, one filter per channel.
    dws = [
        ("k3_s1_p1", 2, 5, 7, 9, 3, 1, 1, False),
        ("k3_s2_p1", 2, 5, 9, 8, 3, 2, 1, False),
        ("k3_s2_p0", 1, 3, 10, 10, 3, 2, 0, True),
        ("k5_s1_p2", 1, 4, 8, 7, 5, 1, 2, True),
        ("k3_s1_p0_1x1out", 1, 2, 3, 3, 3, 1, 0, False),
        ("k3_s1_p1_big", 1, 16, 14, 14, 3, 1, 1, False),
    ]
    for name, n, c, h, w, k, s, p, bias in dws:
        x = f.randn(n, c, h, w)
        wt = f.randn(c, 1, k, k) * 0.5
        cfg = {"stride": s, "padding": p, "bias": bias}
        if bias:
            f.case("depthwise_" + name, lambda a, b, cc: F.conv2d(a, b, cc, stride=s, padding=p, groups=c), [x, wt, f.randn(c)], cfg)
        else:
            f.case("depthwise_" + name, lambda a, b: F.conv2d(a, b, None, stride=s, padding=p, groups=c), [x, wt], cfg)
    for name, n, cin, h, w, cout, bias in [("a", 2, 6, 5, 7, 9, False), ("b", 1, 17, 3, 3, 5, True)]:
        x = f.randn(n, cin, h, w)
        wt = f.randn(cout, cin, 1, 1) * 0.5
        if bias:
            f.case("pointwise_" + name, lambda a, b, c: F.conv2d(a, b, c), [x, wt, f.randn(cout)], {"bias": True})
        else:
            f.case("pointwise_" + name, lambda a, b: F.conv2d(a, b), [x, wt], {"bias": False})
    f.write()


def layer_ops():
    f = FixtureFile("layers", seed=5)
    # BatchNorm2d, training mode: batch statistics, running statistics updated (momentum 0.1).
    for name, shape, momentum, eps in [("a", (2, 3, 4, 5), 0.1, 1e-5), ("b", (1, 4, 3, 3), 0.3, 1e-3), ("c", (4, 2, 1, 1), 0.1, 1e-5)]:
        x = f.randn(*shape) * 2 + 0.5
        gamma = f.rand(shape[1], low=0.5, high=1.5)
        beta = f.randn(shape[1])
        rm = f.randn(shape[1]) * 0.1
        rv = f.rand(shape[1], low=0.5, high=2.0)
        rm64, rv64 = rm.double().clone(), rv.double().clone()
        f.case("batchnorm_train_" + name, lambda a, g, b: F.batch_norm(a, rm64, rv64, g, b, training=True, momentum=momentum, eps=eps), [x, gamma, beta], {"training": True, "momentum": momentum, "eps": eps})
        f.extra("batchnorm_train_" + name, "running_mean_before", rm)
        f.extra("batchnorm_train_" + name, "running_var_before", rv)
        f.extra("batchnorm_train_" + name, "running_mean_after", rm64)
        f.extra("batchnorm_train_" + name, "running_var_after", rv64)
    x = f.randn(2, 3, 4, 4)
    gamma, beta, rm, rv = f.rand(3, low=0.5, high=1.5), f.randn(3), f.randn(3) * 0.1, f.rand(3, low=0.5, high=2.0)
    f.case("batchnorm_eval", lambda a, g, b: F.batch_norm(a, rm.double(), rv.double(), g, b, training=False, eps=1e-5), [x, gamma, beta], {"training": False, "eps": 1e-5})
    f.extra("batchnorm_eval", "running_mean_before", rm)
    f.extra("batchnorm_eval", "running_var_before", rv)

    def away_from(t, points, margin=0.05):
        for pt in points:
            t = torch.where((t - pt).abs() < margin, t + 2 * margin, t)
        return t

    x = away_from(f.randn(2, 3, 4, 5) * 4, [0.0, 6.0])
    f.case("relu", F.relu, [x])
    f.case("relu6", F.relu6, [away_from(f.randn(2, 3, 4, 5) * 5 + 2, [0.0, 6.0])])
    for name, shape, k, s, p in [("k2_s2", (2, 3, 6, 6), 2, 2, 0), ("k3_s2_p1", (1, 2, 7, 7), 3, 2, 1), ("k3_s1", (1, 2, 5, 6), 3, 1, 0)]:
        f.case("maxpool_" + name, lambda a: F.max_pool2d(a, k, s, p), [f.randn(*shape)], {"kernel": k, "stride": s, "padding": p})
        f.case("avgpool_" + name, lambda a: F.avg_pool2d(a, k, s, p), [f.randn(*shape)], {"kernel": k, "stride": s, "padding": p})
    f.case("globalavgpool", lambda a: F.adaptive_avg_pool2d(a, 1), [f.randn(2, 5, 3, 4)])
    f.case("linear_bias", F.linear, [f.randn(4, 7), f.randn(3, 7), f.randn(3)])
    f.case("linear_nobias", F.linear, [f.randn(5, 13), f.randn(6, 13)])
    for name, n, c, smoothing in [("plain", 5, 4, 0.0), ("smooth", 6, 10, 0.1), ("one", 1, 3, 0.0), ("big_logits", 3, 5, 0.0)]:
        logits = f.randn(n, c) * (30 if name == "big_logits" else 2)
        labels = torch.randint(0, c, (n,), generator=f.gen)
        f.case("crossentropy_" + name, lambda a, y: F.cross_entropy(a, y, label_smoothing=smoothing), [logits, labels], {"labelSmoothing": smoothing}, grad_inputs=[True, False])
    f.write()


class DepthwiseSeparable(torch.nn.Module):
    """MobileNetV1's block with the same child names as src/nn/layers.ts."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.dw = torch.nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.dw_bn = torch.nn.BatchNorm2d(cin)
        self.dw_relu = torch.nn.ReLU()
        self.pw = torch.nn.Conv2d(cin, cout, 1, bias=False)
        self.pw_bn = torch.nn.BatchNorm2d(cout)
        self.pw_relu = torch.nn.ReLU()

    def forward(self, x):
        return self.pw_relu(self.pw_bn(self.pw(self.dw_relu(self.dw_bn(self.dw(x))))))


V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


class MobileNetV1(torch.nn.Module):
    """The paper's Table 1, keyed like src/nn/mobilenet.ts (an independent PyTorch definition).

    full_conv=True is the paper's Table 4 baseline: every separable block is one standard
    3x3 convolution -> BatchNorm -> ReLU with the same channels and stride.
    """

    def __init__(self, alpha, num_classes, in_channels=3, full_conv=False, dropout=0.0, stem_stride=2, shallow=False):
        super().__init__()
        c = round(32 * alpha)
        conv_bn_relu = lambda cin, cout, s: torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, s, 1, bias=False), torch.nn.BatchNorm2d(cout), torch.nn.ReLU())
        layers = [conv_bn_relu(in_channels, c, stem_stride)]
        # shallow: Table 5's Shallow MobileNet, without the five 14x14x512 blocks (rows 6..10).
        blocks = [b for i, b in enumerate(V1_BLOCKS) if not (shallow and 6 <= i <= 10)]
        for out, s in blocks:
            out = int(out * alpha)
            layers.append(conv_bn_relu(c, out, s) if full_conv else DepthwiseSeparable(c, out, s))
            c = out
        self.features = torch.nn.Sequential(*layers)
        self.classifier = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(c, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def normalized_error(a, ref):
    """max |a - ref| / max(max |ref|, 1e-6), as test/models.test.ts computes it."""
    return ((a.double() - ref.double()).abs().max() / max(ref.double().abs().max().item(), 1e-6)).item()


def model_fixture(name, model, seed, batch, resolution, num_classes):
    """Weights, a batch, and PyTorch's logits, loss, every parameter gradient and updated BN
    statistics in train mode (float64), then the logits and gradients of an eval-mode pass.

    Deep train-mode BatchNorm on a small batch is ill-conditioned in float32, so the file also
    records how far PyTorch's own float32 run lands from its float64 run, per gradient tensor:
    the tests hold the engine to that standard rather than to an arbitrary tolerance.
    """
    import copy

    gen = torch.Generator().manual_seed(seed)
    model32 = copy.deepcopy(model).float().train()
    model = model.double().train()
    x = torch.rand((batch, 3, resolution, resolution), generator=gen, dtype=torch.float32)
    labels = torch.randint(0, num_classes, (batch,), generator=gen)
    tensors = [(f"param.{k}", v.float() if v.dtype.is_floating_point else v) for k, v in model.state_dict().items()]
    logits = model(x.double())
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    F.cross_entropy(model32(x), labels).backward()
    torch_f32_errors = {k: normalized_error(p32.grad, p.grad) for (k, p), (_, p32) in zip(model.named_parameters(), model32.named_parameters())}
    tensors += [("input", x), ("labels", labels), ("logits", logits.detach().float()), ("loss", loss.detach().float().reshape(()))]
    tensors += [(f"grad.{k}", p.grad.float()) for k, p in model.named_parameters()]
    tensors += [(f"buffer_after.{k}", b.float()) for k, b in model.named_buffers() if b.dtype.is_floating_point]
    # Eval mode: BatchNorm uses the (now updated) running statistics; gradients are well conditioned.
    model.eval()
    model.zero_grad()
    eval_logits = model(x.double())
    F.cross_entropy(eval_logits, labels).backward()
    tensors += [("eval_logits", eval_logits.detach().float())]
    tensors += [(f"eval_grad.{k}", p.grad.float()) for k, p in model.named_parameters()]
    path = os.path.join(OUT_DIR, f"model_{name}.safetensors")
    meta = {"torch": torch.__version__, "batch": str(batch), "resolution": str(resolution), "torch_f32_grad_errors": json.dumps({k: float(f"{v:.4g}") for k, v in torch_f32_errors.items()})}
    write_safetensors(path, tensors, meta)
    print(f"wrote {os.path.relpath(path, ROOT)} (PyTorch float32 vs float64, worst gradient: {max(torch_f32_errors.values()):.3g})")


def models():
    import torchvision

    torch.manual_seed(10)
    model_fixture("v1_a0.25", MobileNetV1(0.25, 10), seed=11, batch=4, resolution=32, num_classes=10)
    torch.manual_seed(20)
    v2 = torchvision.models.mobilenet_v2(weights=None, width_mult=0.35, num_classes=10)
    v2.classifier[0].p = 0.0  # dropout off so that the train-mode pass is deterministic
    model_fixture("v2_a0.35", v2, seed=21, batch=4, resolution=32, num_classes=10)


OPTIMIZER_CASES = [
    ("sgd", "SGD", {"lr": 0.1}),
    ("sgd_momentum_wd", "SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    ("sgd_dampening", "SGD", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3}),
    ("sgd_nesterov", "SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    ("rmsprop", "RMSprop", {"lr": 0.01}),
    ("rmsprop_centered_momentum", "RMSprop", {"lr": 0.005, "alpha": 0.9, "eps": 1e-3, "momentum": 0.9, "centered": True, "weight_decay": 1e-3}),
    ("adam", "Adam", {"lr": 0.01, "weight_decay": 0.01}),
    ("adamw", "AdamW", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1}),
]


def optimizers():
    """20 steps of each optimizer on a fixed least-squares problem: the parameters after every step."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn((8, 3), generator=gen, dtype=torch.float32)
    y = torch.randn((8, 4), generator=gen, dtype=torch.float32)
    w0 = torch.randn((4, 3), generator=gen, dtype=torch.float32)
    b0 = torch.randn((4,), generator=gen, dtype=torch.float32)
    tensors = [("x", x), ("y", y), ("w0", w0), ("b0", b0)]
    for name, cls, kwargs in OPTIMIZER_CASES:
        w = w0.double().clone().requires_grad_(True)
        b = b0.double().clone().requires_grad_(True)
        # Bias without weight decay: a second parameter group, as the trainer builds them.
        opt = getattr(torch.optim, cls)([{"params": [w]}, {"params": [b], "weight_decay": 0.0}], **kwargs)
        ws, bs = [], []
        for _ in range(20):
            opt.zero_grad()
            loss = ((F.linear(x.double(), w, b) - y.double()) ** 2).mean()
            loss.backward()
            opt.step()
            ws.append(w.detach().float().clone())
            bs.append(b.detach().float().clone())
        tensors += [(f"{name}/w", torch.stack(ws)), (f"{name}/b", torch.stack(bs))]
    cases = [{"name": n, "type": c, "options": {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}} for n, c, kw in OPTIMIZER_CASES]
    path = os.path.join(OUT_DIR, "optimizers.safetensors")
    write_safetensors(path, tensors, {"cases": json.dumps(cases), "torch": torch.__version__})
    print(f"wrote {os.path.relpath(path, ROOT)}")


def schedules():
    """Learning rates (and one-cycle momentum) of PyTorch's schedulers over 30 steps, as JSON."""
    from torch.optim import lr_scheduler as S

    def run(make, steps=30, metrics=None):
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
        sched = make(opt)
        lrs, moms = [], []
        for t in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            moms.append(opt.param_groups[0]["momentum"])
            opt.step()
            sched.step(metrics[t]) if metrics is not None else sched.step()
        return {"lr": lrs, "momentum": moms}

    plateau_metrics = [1.0, 0.9, 0.8, 0.8, 0.8, 0.8, 0.79, 0.8, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7] + [0.7] * 14
    out = {
        "steplr": run(lambda o: S.StepLR(o, step_size=7, gamma=0.5)),
        "multisteplr": run(lambda o: S.MultiStepLR(o, milestones=[5, 12, 20], gamma=0.3)),
        "exponentiallr": run(lambda o: S.ExponentialLR(o, gamma=0.9)),
        "cosineannealinglr": run(lambda o: S.CosineAnnealingLR(o, T_max=20, eta_min=0.001)),
        "warmup_cosine": run(lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.01, total_iters=5), S.CosineAnnealingLR(o, T_max=25)], milestones=[5])),
        "onecycle": run(lambda o: S.OneCycleLR(o, max_lr=0.4, total_steps=30)),
        "plateau": run(lambda o: S.ReduceLROnPlateau(o, factor=0.5, patience=2), metrics=plateau_metrics),
    }
    out["plateau"]["metrics"] = plateau_metrics
    path = os.path.join(OUT_DIR, "schedules.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)}")


GROUPS = {"core": core_ops, "conv": conv_ops, "layers": layer_ops, "models": models, "optimizers": optimizers, "schedules": schedules}

if __name__ == "__main__":
    torch.use_deterministic_algorithms(True)
    wanted = sys.argv[1:] or list(GROUPS)
    for g in wanted:
        GROUPS[g]()
