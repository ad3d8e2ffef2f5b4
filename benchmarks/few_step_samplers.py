"""Few-step samplers against the best 1,000-step one, on a shipped model: FID and confident share
with their spread over sampling seeds, network evaluations (NFE) and seconds.

Every sampler draws ``samples`` images for each of ``seeds`` seeds (the same starting noise for
every sampler at a given seed); the MNIST classifier scores them against as many real test images.
The question it answers (issue: faster to quality): which sampler with at most 20 network
evaluations is within the seed spread of DDPM with all 1,000 steps?

    DDPM_MNIST_ROOT=/path/to/mnist python benchmarks/few_step_samplers.py [--size default|few|small|reference] [--model unconditional]
    python benchmarks/few_step_samplers.py --size tiny    # 2-step samplers, 130 samples, the shipped subset as reference

``--model flow`` samples the shipped flow-matching model with the same DDPM samplers, read as an
eps-network on the book's schedule (``dh.EpsFromVelocity``; chapter 9).
"""

from __future__ import annotations

import statistics
import time

from common import dh, save, setup
from time_to_quality import real_reference

S = dh.SamplerSpec
FEW_STEP = [
    S("ddim", num_steps=20, eta=1.0), S("ddim", num_steps=20, eta=1.0, spacing="log_snr"), S("ddim", num_steps=20, eta=0.0, spacing="quadratic"),
    S("dpm-solver++", num_steps=20, spacing="log_snr"), S("dpm-solver++", num_steps=10, spacing="log_snr"),
    S("dpm-solver++-sde", num_steps=20), S("dpm-solver++-sde", num_steps=20, spacing="log_snr"), S("dpm-solver++-sde", num_steps=20, spacing="karras"),
    S("dpm-solver++-sde", num_steps=10, spacing="log_snr"), S("dpm-solver++-sde", num_steps=10, spacing="karras"),
]
SIZES = {
    "tiny": {"samples": 130, "seeds": 1, "specs": [S("ddim", num_steps=2, eta=1.0), S("dpm-solver++-sde", num_steps=2)]},  # seconds: the smoke test
    "small": {"samples": 200, "seeds": 2, "specs": [S("ddim", num_steps=100, eta=1.0)] + FEW_STEP[:2] + FEW_STEP[6:7]},
    "few": {"samples": 1000, "seeds": 3, "specs": [S("ddim", num_steps=100, eta=1.0)] + FEW_STEP},  # without the 27-minute DDPM-1000 on a CPU
    "default": {"samples": 1000, "seeds": 3, "specs": [S("ddpm"), S("ddim", num_steps=100, eta=1.0)] + FEW_STEP},
    # the best 1,000-step sampler and the best 20-step one of "few", side by side with five seeds (about 45 minutes on a CPU)
    "reference": {"samples": 1000, "seeds": 5, "specs": [S("ddpm"), S("dpm-solver++-sde", num_steps=20)]},
    # ten network evaluations (issue: faster to quality, the 10-evaluation target): the stochastic samplers that led at 20
    "ten": {"samples": 1000, "seeds": 3, "specs": [S("ddim", num_steps=10, eta=1.0), S("dpm-solver++-sde", num_steps=10),
                                                   S("dpm-solver++-sde", num_steps=10, spacing="quadratic"), S("dpm-solver++-sde", num_steps=10, spacing="log_snr"),
                                                   S("dpm-solver++-sde", num_steps=10, spacing="karras"), S("dpm-solver++-sde", num_steps=10, spacing="flow_time"),
                                                   S("dpm-solver++-sde", num_steps=10, max_noise=80.0), S("dpm-solver++-sde", num_steps=10, spacing="karras", max_noise=80.0),
                                                   S("dpm-solver++-sde", num_steps=10, spacing="flow_time", max_noise=80.0)]},
}


def main() -> None:
    args, size, device, cfg = setup(__doc__.splitlines()[0], SIZES, extra=lambda p: p.add_argument(
        "--model", default="unconditional", help="the shipped model to sample (default: %(default)s)"))
    n = size["samples"]
    _, reference = real_reference(cfg, n, device)
    pretrained = dh.load_pretrained(args.model, device=device)
    if isinstance(pretrained.model, dh.VelocityNet):   # a flow has no schedule: read it on the book's
        schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T).to(device)
        model = dh.EpsFromVelocity(pretrained.model, schedule)
    else:
        model, schedule = pretrained.model, dh.make_schedule(pretrained.diffusion.schedule, pretrained.diffusion.T).to(device)
    rows = []
    for spec in size["specs"]:
        reports, seconds = [], 0.0
        for seed in range(size["seeds"]):
            start = time.perf_counter()
            report, _ = dh.evaluation.sample_quality(model, schedule, reference, spec, seed=seed, batch_size=cfg.sample_batch_size)
            seconds += time.perf_counter() - start
            reports.append(report)
        fids = [r.fid for r in reports]
        confident = [r.confident_fraction for r in reports]
        rows.append({"sampler": str(spec), "nfe": len(spec.steps(schedule.T, schedule)), "fids": [round(f, 3) for f in fids],
                     "fid_mean": round(statistics.mean(fids), 3), "fid_std": round(statistics.stdev(fids), 3) if len(fids) > 1 else None,
                     "confident_mean": round(statistics.mean(confident), 4), "min_class_share": round(min(r.min_class_share for r in reports), 4),
                     "seconds_per_1000": round(1000 * seconds / (n * len(reports)), 1)})
        r = rows[-1]
        print(f"{r['sampler']:>36} NFE {r['nfe']:5d}: FID {r['fid_mean']:6.2f} ± {r['fid_std'] or 0:4.2f}, "
              f"confident {r['confident_mean']:6.1%}, {r['seconds_per_1000']:7.1f} s per 1,000", flush=True)
    table = ["| sampler | NFE | FID (mean ± sd over seeds) | confident | s per 1,000 |", "|---|---:|---:|---:|---:|"]
    table += [f"| {r['sampler']} | {r['nfe']} | {r['fid_mean']:.2f} ± {r['fid_std'] or 0:.2f} | {r['confident_mean']:.1%} | {r['seconds_per_1000']:.0f} |" for r in rows]
    results = {"model": args.model, "num_samples": n, "seeds": size["seeds"], "fid_floor": round(reference.fid_floor, 2), "rows": rows, "table": "\n".join(table)}
    best = min(rows, key=lambda r: r["fid_mean"])
    few = min((r for r in rows if r["nfe"] <= 20), key=lambda r: r["fid_mean"])
    summary = (f"few_step_samplers on {dh.describe_device(device)} ({args.model}, n={n}, {size['seeds']} seeds): best {best['sampler']} "
               f"FID {best['fid_mean']:.2f} ± {best['fid_std'] or 0:.2f}; best with ≤ 20 NFE {few['sampler']} FID {few['fid_mean']:.2f} ± {few['fid_std'] or 0:.2f}")
    print("\n".join(table))
    name = "few_step_samplers" + ("" if args.size == "default" else f"_{args.size}") + ("" if args.model == "unconditional" else f"_{args.model}")
    save(name, device, args, results, summary)


if __name__ == "__main__":
    main()
