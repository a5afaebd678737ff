#!/usr/bin/python3
"""The reference workloads of WORKLOADS.md in PyTorch, for `npm run bench -- --compare torch`.

Debian packages: python3-torch (1.13) with libopenblas0-pthread; run with /usr/bin/python3.
Prints one JSON list of rows, as bench/run.ts prints its own:

  /usr/bin/python3 bench/torch_bench.py --workload T1 --threads 1 --min-seconds 2
"""
import argparse
import json
import re
import os
import resource
import statistics
import sys
import time

STARTED = time.monotonic()


def threads_from_argv(argv):
    """--threads N (or --threads=N) from the command line, 1 when absent."""
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


# OpenBLAS (Debian's libopenblas0-pthread) starts a pool of one thread per core when it loads,
# and torch.set_num_threads does not reach that pool: without this, "1 thread" ran its GEMMs on
# every core. The pools read their size from the environment once, so it is set before torch loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = threads_from_argv(sys.argv)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from importlib import import_module  # noqa: E402

fixtures = import_module("make-fixtures")

MODELS = {
    "T1": ("v1", 0.25, 32, 32, 10, True),
    "T2": ("v1", 0.5, 8, 128, 10, True),
    "T3": ("v2", 0.35, 16, 96, 10, True),
    "I1": ("v1", 1.0, 1, 224, 1000, False),
    "I2": ("v1", 1.0, 8, 224, 1000, False),
}
ENOUGH_SECONDS = 10


def time_steps(step, min_steps=5, min_seconds=2.0):
    """As bench/run.ts: 2 warm-ups, then >= min_steps steps (or >= 10 s of them) and >= min_seconds; median ms."""
    step()
    step()
    times = []
    start = time.perf_counter()
    while not times or (len(times) < min_steps and time.perf_counter() - start < ENOUGH_SECONDS) or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(sorted(times)), len(times)


def model_workload(wid, min_seconds):
    arch, alpha, batch, res, classes, train = MODELS[wid]
    torch.manual_seed(1)
    if arch == "v1":
        model = fixtures.MobileNetV1(alpha, classes)
    else:
        import torchvision

        model = torchvision.models.mobilenet_v2(weights=None, width_mult=alpha, num_classes=classes)
    x = torch.rand(batch, 3, res, res)
    labels = torch.randint(0, classes, (batch,))
    if train:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), labels).backward()
            opt.step()

    else:
        model.eval()

        def step():
            with torch.no_grad():
                model(x)

    ms, steps = time_steps(step, 5, min_seconds)
    what = f"{arch} a{alpha:g} {batch}x3x{res}x{res} {'train step' if train else 'inference'}"
    return [{"workload": wid, "what": what, "medianMs": ms, "steps": steps, "figure": "img/s", "value": batch * 1000 / ms}]


def gemm_workload(min_seconds):
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    ms, steps = time_steps(lambda: torch.mm(a, b), 5, min_seconds)
    return [{"workload": "G1", "what": "sgemm 512^3", "medianMs": ms, "steps": steps, "figure": "GFLOP/s", "value": 2 * 512**3 / (ms * 1e6)}]


def depthwise_workload(min_seconds):
    x, w, dy = torch.randn(1, 128, 56, 56), torch.randn(128, 1, 3, 3), torch.randn(1, 128, 56, 56)
    parts = [
        ("forward", lambda: F.conv2d(x, w, padding=1, groups=128)),
        ("backward input", lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, padding=1, groups=128)),
        ("backward filter", lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, padding=1, groups=128)),
    ]
    rows = []
    for what, step in parts:
        ms, steps = time_steps(step, 5, min_seconds)
        rows.append({"workload": "D1", "what": f"depthwise 3x3 {what}", "medianMs": ms, "steps": steps, "figure": "ms", "value": ms})
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.workload in MODELS:
        rows = model_workload(a.workload, a.min_seconds)
    elif a.workload == "G1":
        rows = gemm_workload(a.min_seconds)
    elif a.workload == "D1":
        rows = depthwise_workload(a.min_seconds)
    else:
        sys.exit(f"torch_bench: unknown workload {a.workload}")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss / 1024
    # Cores busy on average over the whole process (imports included): about --threads or less.
    cores_used = (usage.ru_utime + usage.ru_stime) / (time.monotonic() - STARTED)
    engine = f"torch {re.match(r'[0-9.]+', torch.__version__).group(0).rstrip('.')}"
    print(json.dumps([{**r, "threads": a.threads, "peakRssMb": peak, "coresUsed": cores_used, "engine": engine} for r in rows]))
