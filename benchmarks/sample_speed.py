"""Sampling throughput of each sampler and step count, for the book's full-size U-Net.

Speed does not depend on the weights, so an untrained network is timed. Reports images per second
and seconds per 1,000 images (extrapolated from one batch), then the cost of one sampling step for
a fixed number of images sent through the network in chunks of different sizes (``batch_size`` of
``dh.sample``; ``Config.sample_batch_size`` is chosen from it).

    python benchmarks/sample_speed.py [--device cuda] [--size default|small|tiny]   # tiny: seconds, the tiny config
"""

from __future__ import annotations

import torch

from common import dh, peak_memory_mb, save, setup, timed

SIZES = {"tiny": {"batch": 4, "runs": [("ddim", 2), ("dpm-solver++", 2)], "chunk_total": 8, "chunks": [4, 8]},
         "small": {"batch": 50, "runs": [("ddim", 10), ("ddim", 50), ("dpm-solver++", 10)], "chunk_total": 200, "chunks": [50, 200]},
         "default": {"batch": 100, "chunk_total": 1000, "chunks": [25, 50, 125, 250, 500, 1000], "runs": [("ddim", 10), ("ddim", 20), ("ddim", 50), ("ddim", 100), ("dpm-solver++", 10),
                                            ("dpm-solver++", 20), ("ddpm", 1000)]}}


def main() -> None:
    args, size, device, cfg = setup(__doc__.splitlines()[0], SIZES)
    schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T).to(device)
    torch.manual_seed(0)
    model = dh.UNet(cfg.unet).to(device).eval()
    dh.sample(model, size["batch"], dh.MNIST_PIXELS, schedule, dh.SamplerSpec("ddim", num_steps=2))  # warm-up
    rows = []
    for method, steps in size["runs"]:
        spec = dh.SamplerSpec(method, num_steps=steps)  # "ddpm" visits all T = 1000 steps
        seconds = timed(lambda: dh.sample(model, size["batch"], dh.MNIST_PIXELS, schedule, spec,
                                          generator=torch.Generator(device=device).manual_seed(0)), device)
        rows.append({"method": method, "steps": steps, "batch": size["batch"], "seconds": round(seconds, 3),
                     "images_per_s": round(size["batch"] / seconds, 2), "seconds_per_1000_images": round(1000 * seconds / size["batch"], 1)})
        print(f"{method:>12} {steps:>5} steps: {rows[-1]['images_per_s']:8.2f} img/s, {rows[-1]['seconds_per_1000_images']:8.1f} s per 1,000 images")
    chunk_rows, total, chunk_steps = [], size["chunk_total"], 4
    for chunk in size["chunks"]:
        seconds = timed(lambda: dh.sample(model, total, dh.MNIST_PIXELS, schedule, dh.SamplerSpec("ddim", num_steps=chunk_steps), batch_size=chunk,
                                          generator=torch.Generator(device=device).manual_seed(0)), device)
        chunk_rows.append({"images": total, "batch_size": chunk, "steps": chunk_steps,
                           "seconds_per_1000_image_steps": round(1000 * seconds / (total * chunk_steps), 3)})
        print(f"{total} images in chunks of {chunk:>4}: {chunk_rows[-1]['seconds_per_1000_image_steps']:.3f} s per step per 1,000 images")
    results = {"config": cfg.mode, "parameters": dh.count_parameters(model), "runs": rows, "chunks": chunk_rows,
               "peak_memory_mb": round(peak_memory_mb(device), 1)}
    summary = (f"sample_speed on {dh.describe_device(device)}: " + ", ".join(f"{r['method']}-{r['steps']} {r['seconds_per_1000_images']:.0f} s/1k" for r in rows)
               + "; s per step per 1k images by chunk: " + ", ".join(f"{r['batch_size']}: {r['seconds_per_1000_image_steps']:.2f}" for r in chunk_rows))
    save("sample_speed", device, args, results, summary)


if __name__ == "__main__":
    main()
