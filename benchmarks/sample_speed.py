"""Sampling throughput of each sampler and step count, for the book's full-size U-Net.

Speed does not depend on the weights, so an untrained network is timed. Reports images per second
and seconds per 1,000 images (extrapolated from one batch).

    python benchmarks/sample_speed.py [--device cuda] [--size default|small]
"""

from __future__ import annotations

import torch

from common import dh, peak_memory_mb, save, setup, timed

SIZES = {"small": {"batch": 50, "runs": [("ddim", 10), ("ddim", 50), ("dpm-solver++", 10)]},
         "default": {"batch": 100, "runs": [("ddim", 10), ("ddim", 20), ("ddim", 50), ("ddim", 100), ("dpm-solver++", 10),
                                            ("dpm-solver++", 20), ("ddpm", 1000)]}}


def main() -> None:
    args, size, device, cfg = setup(__doc__.splitlines()[0], SIZES)
    schedule = dh.make_schedule(cfg.schedule, cfg.T).to(device)
    torch.manual_seed(0)
    model = dh.make_unet(cfg).to(device).eval()
    dh.sample(model, size["batch"], schedule, method="ddim", num_steps=2)  # warm-up
    rows = []
    for method, steps in size["runs"]:
        seconds = timed(lambda: dh.sample(model, size["batch"], schedule, method=method, num_steps=steps if method != "ddpm" else None,
                                          generator=torch.Generator(device=device).manual_seed(0)), device)
        rows.append({"method": method, "steps": steps, "batch": size["batch"], "seconds": round(seconds, 3),
                     "images_per_s": round(size["batch"] / seconds, 2), "seconds_per_1000_images": round(1000 * seconds / size["batch"], 1)})
        print(f"{method:>12} {steps:>5} steps: {rows[-1]['images_per_s']:8.2f} img/s, {rows[-1]['seconds_per_1000_images']:8.1f} s per 1,000 images")
    results = {"config": "full", "parameters": dh.count_parameters(model), "runs": rows, "peak_memory_mb": round(peak_memory_mb(device), 1)}
    summary = f"sample_speed on {dh.metrics.describe_device(device)}: " + ", ".join(f"{r['method']}-{r['steps']} {r['seconds_per_1000_images']:.0f} s/1k" for r in rows)
    save("sample_speed", device, args, results, summary)


if __name__ == "__main__":
    main()
