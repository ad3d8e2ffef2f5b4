"""Training throughput: the package's full training step vs a bare loop on the same network and batch.

The bare loop is what a reader would write first: q_sample, forward, MSE, backward, AdamW step.
The package's step adds the learning-rate schedule, gradient clipping, the EMA update and (on CUDA)
mixed precision. Both use the memory format of ``cfg.train.channels_last``, so that it does not count as
overhead. The overhead is (bare images/s) / (package images/s) − 1.

    python benchmarks/train_speed.py [--device cuda] [--size default|small|tiny]   # tiny: seconds, the tiny config
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import dh, median, peak_memory_mb, save, setup, timed

SIZES = {"tiny": {"steps": 1, "repeats": 1}, "small": {"steps": 5, "repeats": 3}, "default": {"steps": 20, "repeats": 5}}


def main() -> None:
    args, size, device, cfg = setup(__doc__.splitlines()[0], SIZES)
    schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T).to(device)
    batch_size = cfg.train.batch_size
    x0 = dh.load_mnist("train", dh.TINY).images[:batch_size].to(device)  # a real batch (shipped subset)
    if x0.shape[0] < batch_size:
        raise SystemExit(f"need {batch_size} images for one batch, the shipped subset holds {x0.shape[0]}")

    torch.manual_seed(0)
    state = dh.init_train_state(dh.UNet(cfg.unet).to(device), cfg.train)
    torch.manual_seed(0)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    bare_model = dh.UNet(cfg.unet).to(device, memory_format=memory_format)  # as init_train_state formats the package's model
    bare_optimizer = torch.optim.AdamW(bare_model.parameters(), lr=cfg.train.lr)
    generator = torch.Generator(device=device).manual_seed(0)

    def package_steps() -> None:
        for _ in range(size["steps"]):
            dh.train_step(state, x0, schedule, cfg.train, diffusion=cfg.diffusion)

    def bare_steps() -> None:
        for _ in range(size["steps"]):
            t = torch.randint(0, cfg.diffusion.T, (x0.shape[0],), device=device, generator=generator)
            eps = torch.randn(x0.shape, device=device, generator=generator)
            loss = F.mse_loss(bare_model(dh.q_sample(x0, t, eps, schedule), t), eps)
            bare_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            bare_optimizer.step()

    package_steps(), bare_steps()  # warm-up (allocator, kernels, lazy init)
    package_times, bare_times = [], []
    for _ in range(size["repeats"]):  # interleaved, so background load hits both alike
        package_times.append(timed(package_steps, device))
        bare_times.append(timed(bare_steps, device))
    images = size["steps"] * batch_size
    package_ips, bare_ips = images / median(package_times), images / median(bare_times)
    results = {
        "config": cfg.mode, "batch_size": batch_size, "channels_last": cfg.train.channels_last, "parameters": dh.count_parameters(state.model),
        "package_images_per_s": round(package_ips, 1), "bare_images_per_s": round(bare_ips, 1),
        "overhead": round(bare_ips / package_ips - 1, 4), "mixed_precision": str(state.autocast_dtype),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "package_seconds": package_times, "bare_seconds": bare_times, "steps_per_repeat": size["steps"],
    }
    summary = (f"train_speed on {dh.describe_device(device)}: package {package_ips:.0f} img/s, bare loop "
               f"{bare_ips:.0f} img/s, overhead {100 * results['overhead']:+.1f}%, peak memory {results['peak_memory_mb']:.0f} MB")
    save("train_speed", device, args, results, summary)


if __name__ == "__main__":
    main()
