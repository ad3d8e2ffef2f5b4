"""The package's GPU-only code paths, run and measured: bf16 autocast, fp16 with a GradScaler, exact
resume of a mixed-precision run, and the same sampler on the GPU and the CPU.

On a CPU the mixed-precision paths do not exist (``dh.init_train_state`` ignores ``mixed_precision``
there), so this script records them as not run and still checks the rest; its numbers mean something
on a CUDA device only. What it measures, per path:

- **bf16 autocast** (the default on GPUs with native bf16, compute capability 8.0 and up) against the
  same run in float32: ``--steps`` optimiser steps of the book's network from the same seed, their mean
  loss over the last half and the seconds per step. Different arithmetic, so the two runs' losses differ
  by their noise, not to float precision; the check is that bf16 trains as well (the ratio is printed).
- **fp16 with a GradScaler** (what ``dh.mixed_precision_dtype`` picks on older GPUs, e.g. a T4): forced
  here on this GPU by asking for it, the same steps; the final loss scale and the loss, finite.
- **Exact resume under fp16**: a run stopped at half its steps and resumed from its checkpoint (weights,
  EMA, optimiser, loss scaler and generator) against the uninterrupted run, with deterministic kernels
  on; the largest parameter difference (0 when the resume is exact).
- **GPU against CPU sampling**: the shipped unconditional model, DDIM with 20 steps (η = 0), the same
  starting noise x_T, drawn once on the CPU, on both devices; the largest pixel difference in [-1, 1]. cuDNN may compute convolutions in
  TF32 (10-bit mantissa, relative error about 5e-4 per product), so the two agree to about 1e-2 after
  20 steps, not to float32 precision; the number is reported, not asserted.

    python benchmarks/cuda_paths.py --device cuda --steps 200     # about a minute on one GPU
    python benchmarks/cuda_paths.py --size tiny                   # seconds: the smoke test (CPU: the GPU paths are skipped)
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from common import dh, save, setup, synchronize

SIZES = {"tiny": {"steps": 4, "samples": 4}, "default": {"steps": 200, "samples": 64}}


def train_run(cfg: dh.Config, train_set: dh.ImageSet, schedule: dh.NoiseSchedule, device: torch.device, steps: int, *,
              mixed_precision: bool, force_fp16: bool = False, stop_at: int | None = None, checkpoint: Path | None = None) -> dict:
    """``steps`` steps of the book's network from ``cfg.seed`` (stopped after ``stop_at`` and resumed from
    ``checkpoint`` when given); returns the losses, the time per step, the loss scale and the final weights."""
    patch = mock.patch("ddpm_helpers.train_state.mixed_precision_dtype", return_value=torch.float16) if force_fp16 else contextlib.nullcontext()
    with patch:
        torch.manual_seed(cfg.seed)
        state = dh.init_train_state(dh.UNet(cfg.unet).to(device), cfg.train, num_steps=steps, mixed_precision=mixed_precision)
        autocast = state.autocast_dtype
        synchronize(device)
        start = time.perf_counter()
        if stop_at is None:
            dh.train(state, train_set, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, progress=False)
        else:
            dh.train(state, train_set, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, num_steps=stop_at,
                     checkpoint_path=str(checkpoint), progress=False)
            del state  # "the process died"; the checkpoint holds the scaler's state too
            torch.manual_seed(12345)  # other global RNG state in the new process: training draws only from the restored generator
            state = dh.load_checkpoint(checkpoint, dh.UNet(cfg.unet).to(device), cfg.diffusion, cfg.train, mixed_precision=mixed_precision)
            dh.train(state, train_set, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, progress=False)
        synchronize(device)
        seconds = time.perf_counter() - start
    losses = state.history.train_loss
    tail = losses[len(losses) // 2:]
    return {"autocast": str(autocast), "loss_scaler": state.scaler is not None, "steps": state.step, "seconds_per_step": round(seconds / steps, 4),
            "late_mean_loss": round(statistics.mean(tail), 5), "all_finite": all(torch.isfinite(torch.tensor(losses)).tolist()),
            "final_loss_scale": state.scaler.get_scale() if state.scaler is not None else None,
            "losses": losses, "weights": [p.detach().float().cpu() for p in state.model.parameters()]}


def public(run: dict) -> dict:
    return {key: value for key, value in run.items() if key not in ("losses", "weights")}


def main() -> None:
    args, size, device, cfg = setup(__doc__.splitlines()[0], SIZES, lambda p: p.add_argument("--steps", type=int, default=None))
    steps = args.steps or size["steps"]
    cuda = device.type == "cuda"
    train_set = dh.load_mnist("train", dh.TINY)  # the subset shipped with the package: the paths, not the quality, are measured
    schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T).to(device)
    cfg = cfg.replace(train=cfg.train.replace(checkpoint_every=max(1, steps // 2)))
    results: dict = {"device": dh.describe_device(device), "steps": steps, "train_images": len(train_set.labels),
                     "mixed_precision_dtype": str(dh.mixed_precision_dtype(device)), "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}

    fp32 = train_run(cfg, train_set, schedule, device, steps, mixed_precision=False)
    results["float32"] = public(fp32)
    if cuda:
        bf16 = train_run(cfg, train_set, schedule, device, steps, mixed_precision=True)
        results["bf16_autocast"] = public(bf16) | {"loss_ratio_to_float32": round(bf16["late_mean_loss"] / fp32["late_mean_loss"], 4),
                                                  "speedup_over_float32": round(fp32["seconds_per_step"] / bf16["seconds_per_step"], 3)}
        fp16 = train_run(cfg, train_set, schedule, device, steps, mixed_precision=True, force_fp16=True)
        results["fp16_grad_scaler"] = public(fp16) | {"loss_ratio_to_float32": round(fp16["late_mean_loss"] / fp32["late_mean_loss"], 4)}
        torch.use_deterministic_algorithms(True, warn_only=True)  # resumed == uninterrupted needs the same kernels both times
        with tempfile.TemporaryDirectory() as folder:
            straight = train_run(cfg, train_set, schedule, device, steps, mixed_precision=True, force_fp16=True)
            resumed = train_run(cfg, train_set, schedule, device, steps, mixed_precision=True, force_fp16=True,
                                stop_at=steps // 2, checkpoint=Path(folder) / "run.pt")
        torch.use_deterministic_algorithms(False)
        results["fp16_resume"] = {"stopped_at": steps // 2, "same_losses": straight["losses"] == resumed["losses"],
                                  "max_weight_difference": max((a - b).abs().max().item() for a, b in zip(straight["weights"], resumed["weights"]))}
    else:
        results["not_run"] = "bf16 autocast, fp16 with a GradScaler and their resume: CUDA only (dh.init_train_state ignores mixed precision on a CPU)"

    network, diffusion = dh.load_pretrained("unconditional")
    x_T = torch.randn((size["samples"], *dh.MNIST_PIXELS.shape), generator=torch.Generator().manual_seed(cfg.seed))  # one draw, on the CPU

    def ddim(on: torch.device) -> torch.Tensor:
        """DDIM (η = 0: no fresh noise, so x_T alone fixes the result) from the same x_T on ``on``."""
        schedule = dh.make_schedule(diffusion.schedule, diffusion.T).to(on)
        with torch.no_grad():
            *_, last = dh.samplers.iterate_sampler(network.to(on), x_T.to(on), dh.MNIST_PIXELS, schedule, dh.SamplerSpec("ddim", num_steps=20))
        return last.x.float().cpu()

    here, on_cpu = ddim(device), ddim(torch.device("cpu"))
    results["sampling_vs_cpu"] = {"sampler": "ddim, 20 steps, the same x_T", "images": size["samples"], "max_pixel_difference": round((here - on_cpu).abs().max().item(), 6),
                                  "mean_pixel_difference": round((here - on_cpu).abs().mean().item(), 7)}

    parts = [f"cuda paths on {results['device']}, {steps} steps: float32 {fp32['seconds_per_step'] * 1e3:.1f} ms/step, loss {fp32['late_mean_loss']:.4f}"]
    if cuda:
        parts.append(f"bf16 {bf16['seconds_per_step'] * 1e3:.1f} ms/step, loss ratio {results['bf16_autocast']['loss_ratio_to_float32']:.3f}")
        parts.append(f"fp16+GradScaler loss ratio {results['fp16_grad_scaler']['loss_ratio_to_float32']:.3f}, scale {fp16['final_loss_scale']:g}, finite {fp16['all_finite']}")
        parts.append(f"fp16 resume exact: losses {results['fp16_resume']['same_losses']}, max weight diff {results['fp16_resume']['max_weight_difference']:.2e}")
    parts.append(f"DDIM-20 vs CPU: max pixel diff {results['sampling_vs_cpu']['max_pixel_difference']:.2e}")
    save("cuda_paths", device, args, results, "; ".join(parts))


if __name__ == "__main__":
    main()
