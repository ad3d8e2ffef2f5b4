"""Train the book's unconditional DDPM from scratch, scoring samples at wall-clock checkpoints.

    DDPM_MNIST_ROOT=/path/to/mnist python scripts/train_unconditional.py --minutes 15 --name run
    DDPM_MNIST_ROOT=/path/to/mnist python scripts/train_unconditional.py --set batch_size=64 lr=3e-3
    torchrun --nproc_per_node 2 scripts/train_unconditional.py ...      # data-parallel, same code path

Configuration: the full preset (``dh.FULL``) with ``--set field=value`` overrides. Checkpoints go to
``runs/<name>.pt`` (resumed if present) and the quality log to ``runs/<name>.json``: at each
checkpoint the EMA weights draw ``--samples`` images with DDIM (50 steps) and the MNIST classifier
reports FID (against as many test images), the confidently recognised share and the rarest digit.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

import ddpm_helpers as dh

RUNS = Path(__file__).resolve().parents[1] / "runs"


def parse_overrides(pairs: list[str]) -> dict:
    fields = dh.FULL.to_dict()
    overrides = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        if key not in fields:
            raise SystemExit(f"--set: unknown config field {key!r}; fields: {sorted(fields)}")
        try:
            value = json.loads(text)  # numbers, true/false, [lists]
        except json.JSONDecodeError:
            value = text  # plain strings such as cosine
        overrides[key] = tuple(value) if isinstance(value, list) else value
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[2, 5, 10, 15], help="training-time checkpoints (minutes)")
    parser.add_argument("--samples", type=int, default=500, help="samples per evaluation (FID sample count)")
    parser.add_argument("--name", default="unconditional")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="config overrides")
    args = parser.parse_args()

    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if torch.cuda.is_available() else torch.device("cpu")
    cfg = dh.FULL.replace(**parse_overrides(args.set))
    if rank == 0:
        print(cfg.summary(), "| device:", dh.metrics.describe_device(device), "| processes:", dist.get_world_size() if distributed else 1)

    train_set, test_set = dh.load_mnist("train", cfg), dh.load_mnist("test", cfg)
    val_set = dh.load_mnist("val", cfg)
    reference = dh.evaluation.real_reference(train_set.images, test_set.images, args.samples, device) if rank == 0 else None
    schedule = dh.make_schedule(cfg.schedule, cfg.T).to(device)
    RUNS.mkdir(exist_ok=True)
    checkpoint, log_path = RUNS / f"{args.name}.pt", RUNS / f"{args.name}.json"
    torch.manual_seed(cfg.seed)
    state = dh.resume_or_init(checkpoint, dh.make_unet(cfg), cfg, device)
    log = json.loads(log_path.read_text()) if log_path.is_file() and state.step else {"config": cfg.to_dict(), "checkpoints": []}
    if rank == 0:
        print(f"{dh.count_parameters(state.model):,} parameters; {len(train_set.labels)} training images; "
              f"FID floor at n={args.samples}: {reference.fid_floor:.2f}; starting at step {state.step}")
    for minutes in args.minutes:
        if state.elapsed >= 60 * minutes:
            continue
        dh.train(state, train_set, schedule, cfg, num_steps=10**9, val_set=val_set, checkpoint_path=checkpoint,
                 max_seconds=60 * minutes, progress=False)
        if rank != 0:
            continue
        start = time.perf_counter()
        report, _ = dh.evaluation.sample_quality(state.ema.model, schedule, reference, num_steps=cfg.num_sampling_steps, eta=cfg.sampling_eta)
        row = {"minutes": round(state.elapsed / 60, 2), "steps": state.step, "images_per_s": round(state.step * cfg.batch_size / state.elapsed, 1),
               "val_loss": state.history.val_loss[-1], **report._asdict(), "eval_seconds": round(time.perf_counter() - start, 1)}
        log["checkpoints"].append(row)
        log.update(fid_floor=reference.fid_floor, device=dh.metrics.describe_device(device), num_train_images=len(train_set.labels))
        log_path.write_text(json.dumps(log, indent=1) + "\n")
        print(f"{row['minutes']:6.2f} min {state.step:6d} steps ({row['images_per_s']:.0f} img/s): val loss {row['val_loss']:.4f}, "
              f"FID {report.fid:7.2f}, confident {report.confident_fraction:6.1%}, rarest digit {report.min_class_share:5.1%}", flush=True)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
