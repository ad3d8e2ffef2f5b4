"""What each design choice costs in training throughput: one change at a time from the book's
full configuration (width, depth, attention placement, patch stem, downsampling, weight
standardisation, batch size, the memory format (``train.channels_last``), torch.compile).

Each variant runs the package's training step on random 32×32 batches (speed does not depend on
the data); images/s is the median over repeats.

    python benchmarks/architecture_speed.py [--device cuda] [--size default|small|tiny]   # tiny: seconds, the tiny config
"""

from __future__ import annotations

import torch

from common import dh, median, save, setup, timed

SIZES = {"tiny": {"steps": 1, "repeats": 1, "compile": False}, "small": {"steps": 3, "repeats": 2, "compile": False}, "default": {"steps": 8, "repeats": 3, "compile": True}}


def variants(cfg):
    """(name, UNetConfig changes, TrainConfig changes, options): the full configuration, then one change at a time."""
    unet, train = cfg.unet, cfg.train
    yield "full configuration", {}, {}, {}
    yield "no patch stem (runs at 32×32)", {"patch_size": 1}, {}, {}
    yield f"width {unet.channels * 3 // 2}", {"channels": unet.channels * 3 // 2}, {}, {}
    yield f"{unet.num_res_blocks + 1} res blocks per level", {"num_res_blocks": unet.num_res_blocks + 1}, {}, {}
    yield "attention at 4×4 only", {"attention_resolutions": (4,)}, {}, {}
    yield "no attention outside the middle", {"attention_resolutions": ()}, {}, {}
    yield "space-to-depth downsampling", {"downsample": "space_to_depth"}, {}, {}
    yield "weight standardisation", {"weight_standardization": True}, {}, {}
    yield f"batch {train.batch_size * 2}", {}, {"batch_size": train.batch_size * 2}, {}
    yield f"batch {train.batch_size // 2}", {}, {"batch_size": train.batch_size // 2}, {}
    other_format = "contiguous (NCHW) memory format" if train.channels_last else "channels-last memory format"
    yield other_format, {}, {"channels_last": not train.channels_last}, {}
    yield "torch.compile", {}, {}, {"compile": True}


def main() -> None:
    args, size, device, cfg = setup(__doc__.splitlines()[0], SIZES)
    schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T).to(device)
    rows = []
    for name, unet_changes, train_changes, options in variants(cfg):
        if options.get("compile") and not size["compile"]:
            continue
        try:  # a change may not fit a small config (e.g. attention at 4×4 in the tiny U-Net, which stops at 8×8)
            unet, train = cfg.unet.replace(**unet_changes), cfg.train.replace(**train_changes)
        except ValueError as error:
            rows.append({"variant": name, "error": f"not valid for the {cfg.mode} config: {error}"[:200]})
            continue
        torch.manual_seed(0)
        model = dh.UNet(unet).to(device)
        state = dh.init_train_state(model, train)  # formats the model channels-last when train.channels_last
        memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
        if options.get("compile"):
            try:
                state.model = torch.compile(model)
            except Exception as error:  # no compiler tool chain, unsupported backend, ...
                rows.append({"variant": name, "error": f"{type(error).__name__}: {error}"[:200]})
                continue
        x0 = (torch.rand(train.batch_size, 1, 32, 32, device=device) * 2 - 1).contiguous(memory_format=memory_format)

        def steps() -> None:
            for _ in range(size["steps"]):
                dh.train_step(state, x0, schedule, train, diffusion=cfg.diffusion)

        try:
            first = timed(steps, device)  # warm-up; for torch.compile this includes compilation
            times = [timed(steps, device) for _ in range(size["repeats"])]
        except Exception as error:
            rows.append({"variant": name, "error": f"{type(error).__name__}: {error}"[:200]})
            continue
        ips = size["steps"] * train.batch_size / median(times)
        rows.append({"variant": name, "parameters": dh.count_parameters(model), "images_per_s": round(ips, 1),
                     "warmup_seconds": round(first, 1), "seconds": times})
        print(f"{name:34s} {rows[-1]['parameters']:>10,} parameters {ips:8.1f} img/s", flush=True)
    base = rows[0]["images_per_s"]
    for row in rows:
        if "images_per_s" in row:
            row["relative_to_full"] = round(row["images_per_s"] / base, 3)
    summary = f"architecture_speed on {dh.describe_device(device)}: " + ", ".join(
        f"{r['variant']} {r['relative_to_full']:.2f}x" for r in rows[1:] if "relative_to_full" in r)
    save("architecture_speed", device, args, {"config": cfg.to_dict(), "variants": rows}, summary)


if __name__ == "__main__":
    main()
