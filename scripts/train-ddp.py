#!/usr/bin/python3
"""Continue training a mobilenet-ts model in PyTorch, on many cores or many machines.

For a user who outgrows one machine's cores: `mobilenet export` writes the weights under
PyTorch's names with the model's settings in the metadata; this script builds the same model in
PyTorch from that metadata, trains it with DistributedDataParallel (one process per core or per
machine, gradients averaged across them after every step), and writes a file with the same
metadata that `mobilenet import` reads back. Debian packages: python3-torch (1.13),
python3-torchvision (0.14). Data: the four IDX files of Fashion-MNIST or MNIST (gzipped or not).

  npm run mobilenet -- export runs/default weights/default.safetensors
  # one machine, one process (--nproc-per-node N for N processes):
  /usr/bin/python3 scripts/train-ddp.py --weights weights/default.safetensors \\
      --data-path /usr/share/datasets/fashion-mnist --epochs 2 --out weights/ddp.safetensors
  # two machines, two processes each: the same command on both, with
  #   --nnodes 2 --nproc-per-node 2 --node-rank 0 (1 on the other) --master-addr HOST0

The script starts its own processes (as torchrun would; Debian's torchrun 1.13 fails under
Python 3.11 before it starts any) and joins them over TCP with the gloo backend.
  npm run mobilenet -- import weights/ddp.safetensors ddp.safetensors
  npm run mobilenet -- eval ddp.safetensors --data-path /usr/share/datasets/fashion-mnist

The recipe is mobilenet-ts's default one: SGD with Nesterov momentum 0.9, a one-cycle learning
rate schedule, weight decay on all but BatchNorm and depthwise weights, label smoothing, random
horizontal flips. `--batch-size` is per process, so the global batch is batch-size x processes;
`--lr` is for a global batch of 64 and is scaled linearly with it (Goyal et al. 2017).
"""
import argparse
import gzip
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importlib import import_module  # noqa: E402

interop = import_module("export-torchvision")
fixtures = import_module("make-fixtures")


def fail(message):
    """Bad input: one line on stderr and exit status 2, as the mobilenet CLI does (named after the script run: train-torch.py uses this too)."""
    print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)
    sys.exit(2)


def read_idx(path):
    """An IDX file (the MNIST format), gzipped or not, as a numpy array."""
    if not os.path.exists(path) and os.path.exists(path + ".gz"):
        path += ".gz"
    if not os.path.exists(path):
        fail(f"{path}(.gz): no such file (--data-path must hold the four IDX files of Fashion-MNIST or MNIST)")
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        fail(f"{path}: {e}")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4]) if len(raw) >= 4 else (1, 0, 0)
    if zero != 0 or dtype != 0x08 or len(raw) < 4 + 4 * ndim:
        fail(f"{path}: not an IDX file of unsigned bytes")
    shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        fail(f"{path}: header declares shape {shape} ({int(np.prod(shape))} bytes), file holds {data.size}")
    return data.reshape(shape)


def load_split(data_path, split, mean, std):
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(data_path, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(os.path.join(data_path, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        fail(f"{data_path}: {split} images {images.shape} and labels {labels.shape} do not match")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    x = (x - mean) / std
    return torch.utils.data.TensorDataset(x, torch.from_numpy(labels.astype(np.int64)))


def is_no_decay(name, param):
    # BatchNorm scales and shifts and all biases are 1-D; depthwise filters have one input channel.
    return param.ndim <= 1 or (param.ndim == 4 and param.shape[1] == 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="a file written by `mobilenet export`")
    ap.add_argument("--data-path", required=True, help="folder with the four IDX files")
    ap.add_argument("--out", required=True, help="the .safetensors file to write (rank 0)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64, help="per process")
    ap.add_argument("--lr", type=float, default=0.1, help="for a global batch of 64")
    ap.add_argument("--weight-decay", type=float, default=5e-5)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--max-steps", type=int, default=0, help="stop each epoch after this many steps (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nproc-per-node", type=int, default=1, help="processes on this machine")
    ap.add_argument("--nnodes", type=int, default=1, help="machines")
    ap.add_argument("--node-rank", type=int, default=0, help="this machine's index, 0 on the one at --master-addr")
    ap.add_argument("--master-addr", default="127.0.0.1")
    ap.add_argument("--master-port", type=int, default=29500)
    a = ap.parse_args()
    if a.epochs < 1 or a.batch_size < 1 or a.nproc_per_node < 1 or a.nnodes < 1 or not 0 <= a.node_rank < a.nnodes:
        fail("--epochs, --batch-size, --nproc-per-node and --nnodes must be at least 1, and --node-rank in [0, --nnodes)")
    # Check the inputs here, once, so that a mistake is one line rather than a traceback per process.
    load_weights(a.weights)
    for split in ("train", "test"):
        load_split(a.data_path, split, 0.0, 1.0)
    torch.multiprocessing.spawn(train, args=(a,), nprocs=a.nproc_per_node)


def load_weights(path):
    """The tensors and metadata of a file written by `mobilenet export`, checked."""
    if not os.path.isfile(path):
        fail(f"--weights {path}: no such file")
    try:
        tensors, meta = interop.read_safetensors(path)
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError, MemoryError) as e:
        fail(f"--weights {path}: not a safetensors file ({e})")
    if "model" not in meta:
        fail(f"--weights {path}: no mobilenet-ts metadata (write it with `mobilenet export`)")
    shape = (meta.get("in_channels", "3"), meta.get("resolution", "224"))
    if shape != ("1", "28"):
        fail(f"--weights {path}: this script trains 1x28x28 models (IDX data); the file's model takes {shape[0]}x{shape[1]}x{shape[1]} images")
    return tensors, meta


def train(local_rank, a):
    # Every process of every machine joins one group over TCP; gloo is PyTorch's CPU backend.
    world = a.nnodes * a.nproc_per_node
    rank = a.node_rank * a.nproc_per_node + local_rank
    dist.init_process_group("gloo", init_method=f"tcp://{a.master_addr}:{a.master_port}", rank=rank, world_size=world)
    torch.manual_seed(a.seed * 1000 + rank)  # each process its own random flips
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    tensors, meta = load_weights(a.weights)
    model = interop.build(meta, None)
    model.load_state_dict(tensors)
    norm = json.loads(meta["normalization"])
    mean, std = torch.tensor(norm["mean"]).view(1, -1, 1, 1), torch.tensor(norm["std"]).view(1, -1, 1, 1)

    train = load_split(a.data_path, "train", mean, std)
    test = load_split(a.data_path, "test", mean, std)
    # Each process sees its own 1/world of every epoch, reshuffled per epoch with the same seed.
    sampler = torch.utils.data.distributed.DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=a.seed)
    loader = torch.utils.data.DataLoader(train, batch_size=a.batch_size, sampler=sampler, drop_last=True)

    ddp = torch.nn.parallel.DistributedDataParallel(model)
    decay = [p for n, p in model.named_parameters() if not is_no_decay(n, p)]
    no_decay = [p for n, p in model.named_parameters() if is_no_decay(n, p)]
    lr = a.lr * a.batch_size * world / 64
    opt = torch.optim.SGD([{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=0.9, nesterov=True)
    steps_per_epoch = len(loader) if a.max_steps == 0 else min(a.max_steps, len(loader))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=a.epochs * steps_per_epoch)

    for epoch in range(a.epochs):
        sampler.set_epoch(epoch)
        ddp.train()
        total, correct, loss_sum = 0, 0, 0.0
        for step, (x, y) in enumerate(loader):
            if step == steps_per_epoch:
                break
            flip = torch.rand(x.shape[0]) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            logits = ddp(x)
            loss = F.cross_entropy(logits, y, label_smoothing=a.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # DDP averages the gradients over all processes here
            opt.step()
            sched.step()
            total += y.numel()
            correct += (logits.argmax(1) == y).sum().item()
            loss_sum += loss.item() * y.numel()
        if rank == 0:
            acc = evaluate(model, test)
            print(f"epoch {epoch + 1}/{a.epochs}  {world} process(es) x {a.batch_size} images  train loss {loss_sum / total:.4f} top1 {100 * correct / total:.2f}%  |  test top1 {100 * acc:.2f}%", flush=True)

    if rank == 0:
        out_meta = dict(meta)
        out_meta["trained_with"] = f"scripts/train-ddp.py, {world} process(es), {a.epochs} epoch(s)"
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        fixtures.write_safetensors(a.out, list(model.state_dict().items()), out_meta)
        print(f"wrote {a.out}")
    dist.destroy_process_group()


@torch.no_grad()
def evaluate(model, dataset):
    model.eval()
    correct = 0
    for x, y in torch.utils.data.DataLoader(dataset, batch_size=500):
        correct += (model(x).argmax(1) == y).sum().item()
    model.train()
    return correct / len(dataset)


if __name__ == "__main__":
    main()
