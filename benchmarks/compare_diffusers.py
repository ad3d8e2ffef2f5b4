"""Side by side with the library a reader would otherwise use: Hugging Face diffusers.

Both systems train from scratch on the same MNIST tensors (32×32, [-1, 1]) for the same wall-clock
budgets on the same device, and are scored by the same metrics at each budget:

* ours: the book's full configuration (``dh.FULL``): its U-Net, schedule, learning rate, EMA and trainer,
  in one run planned by time for the last budget (its learning rate cools over the end of it);
* diffusers: ``UNet2DModel`` as the Hugging Face diffusion course configures it for MNIST
  (block_out_channels (32, 64, 64), 2 layers per block, attention in the two lower blocks),
  ``DDPMScheduler`` (1000 steps, linear β), AdamW at lr 1e-3, batch 128, MSE on the noise, no EMA.

Both sample with DDIM, 100 steps and η = 1 (ours: ``dh.evaluation.sample_quality``; diffusers:
``DDIMScheduler`` with the same step count and η): the book's judge until 2026-12, and a sampler both
libraries have (``cfg.judge`` is replaced by it here).
Install the extra first: ``pip install -e .[bench]``.

    DDPM_MNIST_ROOT=/path/to/mnist python benchmarks/compare_diffusers.py [--device cuda] [--size default|large|15min] [--only diffusers]
    python benchmarks/compare_diffusers.py --size tiny    # seconds: ours in its tiny config, the shipped subset, temporary results

``--only diffusers`` skips our side, e.g. when this book's recipe was judged by ``benchmarks/recipe.py``
in the same session on the same machine with the same sampler, sample count and seed.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from common import dh, judged, save, setup, synchronize
from time_to_quality import evaluate, real_reference

SIZES = {"tiny": {"minutes": [0.01], "samples": 130}, "small": {"minutes": [0.5], "samples": 150}, "default": {"minutes": [1.5], "samples": 200},
         "large": {"minutes": [1, 5, 15], "samples": 500}, "15min": {"minutes": [15], "samples": 1000}}
BATCH_SIZE, LR = 128, 1e-3


def diffusers_system(device):
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    model = UNet2DModel(
        sample_size=32, in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    ).to(device)
    train_scheduler = DDPMScheduler(num_train_timesteps=1000)
    return model, train_scheduler, DDIMScheduler.from_config(train_scheduler.config)


def train_diffusers_for(model, scheduler, optimizer, images, seconds, generator, device) -> int:
    """The course's training loop, for ``seconds`` of wall-clock time; returns the steps taken."""
    model.train()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x0 = images[torch.randint(0, images.shape[0], (BATCH_SIZE,), device=device, generator=generator)]
        noise = torch.randn(x0.shape, device=device, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (BATCH_SIZE,), device=device, generator=generator)
        loss = F.mse_loss(model(scheduler.add_noise(x0, noise, t), t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    synchronize(device)
    return steps


@torch.no_grad()
def sample_diffusers(model, ddim, num_samples, device, steps, eta, seed=0, batch=500):
    model.eval()
    ddim.set_timesteps(steps)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = []
    for start in range(0, num_samples, batch):
        x = torch.randn((min(batch, num_samples - start), 1, 32, 32), device=device, generator=generator)
        for t in ddim.timesteps:
            x = ddim.step(model(x, t).sample, t, x, eta=eta, generator=generator).prev_sample
        out.append(x.clamp(-1, 1))
    return torch.cat(out)



def main() -> None:
    args, size, device, cfg = setup(__doc__.splitlines()[0], SIZES, extra=lambda p: p.add_argument(
        "--only", choices=("ours", "diffusers"), default=None, help="train and judge only one of the two systems"))
    cfg = cfg.replace(judge=dh.SamplerSpec("ddim", num_steps=cfg.pick(tiny=2, full=100), eta=1.0))  # diffusers' DDIMScheduler has it too
    n = size["samples"]
    train_set, reference = real_reference(cfg, n, device)
    floor = reference.fid_floor
    images = train_set.images.to(device)

    systems = []
    if args.only in (None, "ours"):
        systems.append(train_ours(size, device, cfg, reference, train_set, images))
    if args.only in (None, "diffusers"):
        systems.append(train_theirs(size, device, cfg, reference, images, n))

    header = ["system", "parameters", "train img/s"] + [f"FID @ {m} min" for m in size["minutes"]] + ["s per 1k samples"]
    table = [header, ["---"] * len(header)]
    for system in systems:
        table.append([system["system"], f"{system['parameters']:,}", f"{system['images_per_s']:.0f}"]
                     + [f"{b['fid']:.1f} ({b['confident_fraction']:.0%})" for b in system["budgets"]]
                     + [f"{system['sampling_seconds_per_1000']:.0f}"])
    markdown = "\n".join("| " + " | ".join(row) + " |" for row in table)
    print(f"\nFID at n = {n} (floor {floor:.2f}); in brackets the share recognised confidently; sampler {cfg.judge}\n{markdown}")
    results = {"num_samples": n, "fid_floor": round(floor, 2), "sampler": str(cfg.judge), "systems": systems, "table": markdown}
    summary = (f"compare_diffusers on {dh.describe_device(device)}: FID after {size['minutes'][-1]} min: "
               + ", ".join(f"{s['system']} {s['budgets'][-1]['fid']:.1f}" for s in systems) + f" (n={n}, floor {floor:.1f})")
    save("compare_diffusers" if args.size == "default" else f"compare_diffusers_{args.size}", device, args, results, summary)


def train_ours(size, device, cfg, reference, train_set, images) -> dict:
    """The book's recipe, one run planned by time for the last budget, judged at each budget."""
    schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T).to(device)
    torch.manual_seed(0)
    state = dh.init_train_state(dh.UNet(cfg.unet).to(device), cfg.train, max_seconds=60 * max(size["minutes"]))
    ours = {"system": "ddpm_helpers (this book)", "parameters": dh.count_parameters(state.model), "budgets": []}
    budgets = iter(size["minutes"])

    def judge(state: dh.TrainState) -> None:  # dh.train calls it at each budget and does not count its time
        minutes = next(budgets)
        report, sample_seconds = evaluate(judged(state.ema.model, cfg, schedule), schedule, reference, cfg)
        ours["budgets"].append({"minutes": minutes, "steps": state.step, "fid": round(report.fid, 2),
                                "confident_fraction": round(report.confident_fraction, 4), "min_class_share": report.min_class_share})
        ours["sampling_seconds_per_1000"] = round(1000 * sample_seconds / reference.num_samples, 1)
        print(f"ours      {minutes:5.1f} min: {state.step:6d} steps, FID {report.fid:7.2f}, confident {report.confident_fraction:6.1%}")

    dh.train(state, dh.ImageSet(images, train_set.labels.to(device)), dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion,
             on_eval=judge, eval_at_seconds=[60 * minutes for minutes in size["minutes"]], progress=False)
    ours["images_per_s"] = round(state.step * cfg.train.batch_size / state.elapsed, 1)
    return ours


def train_theirs(size, device, cfg, reference, images, n) -> dict:
    """The diffusers course recipe, trained for each budget in turn and judged with the same sampler."""
    model, ddpm, ddim = diffusers_system(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    generator = torch.Generator(device=device).manual_seed(0)
    theirs = {"system": "diffusers UNet2DModel (course MNIST recipe)", "parameters": sum(p.numel() for p in model.parameters()), "budgets": []}
    steps, trained = 0, 0.0
    for minutes in size["minutes"]:
        steps += train_diffusers_for(model, ddpm, optimizer, images, 60 * minutes - trained, generator, device)
        trained = 60 * minutes
        start = time.perf_counter()
        samples = sample_diffusers(model, ddim, n, device, cfg.judge.num_steps or cfg.diffusion.T, cfg.judge.eta or 0.0, batch=cfg.sample_batch_size)
        sample_seconds = time.perf_counter() - start
        report = dh.metrics.quality_report(reference.classifier, samples, reference.features)
        theirs["budgets"].append({"minutes": minutes, "steps": steps, "fid": round(report.fid, 2),
                                  "confident_fraction": round(report.confident_fraction, 4), "min_class_share": report.min_class_share})
        print(f"diffusers {minutes:5.1f} min: {steps:6d} steps, FID {report.fid:7.2f}, confident {report.confident_fraction:6.1%}")
    theirs["images_per_s"] = round(steps * BATCH_SIZE / trained, 1)
    theirs["sampling_seconds_per_1000"] = round(1000 * sample_seconds / n, 1)
    return theirs

if __name__ == "__main__":
    main()
