"""Where one training step of the book's network goes: wall time per step against the device's busy time.

The step is timed without the profiler (``--timed`` steps after ``--warmup``), then ``--profiled`` steps
run under ``torch.profiler``, whose kernel times, summed, say how long the GPU was busy per step; the
gap between the two is time the GPU waited for the host (Python, kernel launches). Done for float32
and for bf16 autocast (``dh.init_train_state``'s ``mixed_precision``), each from the same seed, on
the MNIST subset shipped with the package (the step's cost does not depend on the images).

    python benchmarks/cuda_step_profile.py --device cuda                      # about a minute on one GPU
    python benchmarks/cuda_step_profile.py --device cpu --warmup 1 --timed 2 --profiled 1   # the smoke test

Results: ``benchmarks/results/cuda_step_profile-cuda.log`` (its printed output; see recipe-cpu.md).
On a CPU there is no device time to sum, and autocast is off (the package uses none on a CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ddpm_helpers as dh  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--warmup", type=int, default=50, help="steps before timing (cuDNN's choices, allocator)")
    p.add_argument("--timed", type=int, default=200, help="steps timed without the profiler")
    p.add_argument("--profiled", type=int, default=20, help="steps under the profiler")
    args = p.parse_args()
    device = dh.pick_device(args.device)
    cfg = dh.FULL
    train_set = dh.load_mnist("train", dh.TINY)
    schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T).to(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    print(f"{dh.describe_device(device)}, torch {torch.__version__}, batch {cfg.train.batch_size}")
    for mixed_precision in (False, True):
        torch.manual_seed(cfg.seed)
        state = dh.init_train_state(dh.UNet(cfg.unet).to(device), cfg.train, num_steps=args.warmup + args.timed + args.profiled,
                                    mixed_precision=mixed_precision)

        def run(steps: int) -> None:
            dh.train(state, train_set, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, num_steps=state.step + steps, progress=False)

        run(args.warmup)
        sync()
        start = time.perf_counter()
        run(args.timed)
        sync()
        wall_ms = (time.perf_counter() - start) / args.timed * 1e3
        with profile(activities=activities) as prof:
            run(args.profiled)
            sync()
        events = prof.key_averages()
        busy_ms = sum(e.self_device_time_total for e in events) / args.profiled / 1e3
        kernels = sum(e.count for e in events if e.device_type.name == "CUDA") / args.profiled
        print(f"mixed_precision={mixed_precision} autocast={state.autocast_dtype}: wall {wall_ms:.1f} ms/step, "
              f"device busy {busy_ms:.1f} ms/step, kernels/step {kernels:.0f}")
        print(events.table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=50))


if __name__ == "__main__":
    main()
