"""How long until recognisable digits: train the book's unconditional configuration from scratch and
measure sample quality at fixed wall-clock checkpoints (training time only; evaluation is not counted).

It is one run, planned by time for the last checkpoint: its learning rate cools down over the end
of that budget, so the earlier checkpoints show a model still training at full learning rate. It is
one call of ``dh.train``, which calls back at each checkpoint and does not count the callback's time.
At each checkpoint the EMA weights draw samples with the book's judging sampler (``cfg.judge``:
the stochastic DPM-Solver++(2M), 20 steps); the MNIST classifier scores them: FID against as many real test images, the
share it recognises confidently (p ≥ 0.9), and the share of the rarest predicted digit. Needs the
MNIST training set (DDPM_MNIST_ROOT or a download).

    DDPM_MNIST_ROOT=/path/to/mnist python benchmarks/time_to_quality.py [--device cuda] [--size default]
    python benchmarks/time_to_quality.py --size tiny      # seconds: tiny config, shipped subset, temporary results
"""

from __future__ import annotations

import time

import torch

from common import dh, judged, save, setup

SIZES = {
    "tiny": {"minutes": [0.01, 0.02], "samples": 200},
    "small": {"minutes": [0.5, 1.0], "samples": 200},
    "default": {"minutes": [1.0, 2.0, 4.0], "samples": 400},
    "long": {"minutes": [1, 2, 4, 8, 15, 30], "samples": 1000},
}


def real_reference(cfg, n, device):
    """The training set and the real reference (classifier, test features, FID floor) at n samples."""
    train_set, test_set = dh.load_mnist("train", cfg), dh.load_mnist("test", cfg)
    reference = dh.evaluation.real_reference(train_set.images, test_set.images, n, device)
    print(f"{len(train_set.labels)} training images; FID floor (train vs test, n={n}): {reference.fid_floor:.2f}")
    return train_set, reference


def evaluate(model, schedule, reference, cfg):
    """Samples from the book's judging sampler, scored by the classifier; returns (report, sampling seconds)."""
    start = time.perf_counter()
    report, _ = dh.evaluation.sample_quality(model, schedule, reference, cfg.judge, seed=cfg.seed, batch_size=cfg.sample_batch_size)
    return report, time.perf_counter() - start


def main() -> None:
    args, size, device, cfg = setup(__doc__.splitlines()[0], SIZES)
    n = size["samples"]
    train_set, reference = real_reference(cfg, n, device)
    floor = reference.fid_floor

    schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T).to(device)
    torch.manual_seed(cfg.seed)
    state = dh.init_train_state(dh.UNet(cfg.unet).to(device), cfg.train, max_seconds=60 * max(size["minutes"]))
    rows = []

    def judge(state: dh.TrainState) -> None:
        report, sample_seconds = evaluate(judged(state.ema.model, cfg, schedule), schedule, reference, cfg)
        rows.append({"train_minutes": round(state.elapsed / 60, 2), "steps": state.step, "images_seen": state.step * cfg.train.batch_size,
                     "fid": round(report.fid, 2), "confident_fraction": round(report.confident_fraction, 4),
                     "min_class_share": report.min_class_share, "class_shares": report.class_shares,
                     "sampling_seconds": round(sample_seconds, 1)})
        print(f"{rows[-1]['train_minutes']:6.2f} min, {state.step:6d} steps: FID {report.fid:7.2f}, "
              f"confident {report.confident_fraction:6.1%}, rarest digit {report.min_class_share:5.1%}", flush=True)

    dh.train(state, train_set, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, on_eval=judge,
             eval_at_seconds=[60 * minutes for minutes in size["minutes"]], progress=False)
    results = {"config": cfg.to_dict(), "parameters": dh.count_parameters(state.model), "sampler": str(cfg.judge),
               "num_samples": n, "fid_floor": round(floor, 2), "num_train_images": len(train_set.labels), "checkpoints": rows}
    last = rows[-1]
    summary = (f"time_to_quality on {dh.describe_device(device)}: after {last['train_minutes']:.1f} min of training "
               f"FID {last['fid']:.1f} (floor {floor:.1f}, n={n}), {last['confident_fraction']:.0%} recognised confidently")
    save("time_to_quality", device, args, results, summary)


if __name__ == "__main__":
    main()
