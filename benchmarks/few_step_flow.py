"""Few-step generators from the shipped flow: reflow against distillation of the teacher's k-step map,
same teacher, same trajectories, same fine-tuning budget, judged side by side.

One pass of the shipped flow (``teacher_steps`` Euler steps from fixed noise) gives both training sets:
reflow's pairs (noise, the trajectory's end) and the distillation's pieces (the trajectory cut into
``pieces`` equal pieces of flow time, ``dh.trajectory_segments``). Two copies of the flow are then
fine-tuned for the same steps at the same rate: one by reflow (flow matching on the straight line from
each noise to its sample, at every t), one by distillation (flow matching on each piece's chord, read
only at the piece's start, so that one Euler step takes one piece). A second round fine-tunes
the distilled student once more, as long, on pieces that start at its own states
(``dh.trajectory_segments(..., student=...)``): what it meets when sampled. ``--models`` picks what runs
beside the first round (reflow, own-states; both by default). Each, and the untouched flow, is
judged with 1, 2, 4 and 8 Euler steps: FID and confident share, mean ± sd over sampling seeds.
The question it answers (issue 28): can a 4-step generator reach twice the 1,000-step DDPM's FID?

    DDPM_MNIST_ROOT=/path/to/mnist python benchmarks/few_step_flow.py [--size default]
    python benchmarks/few_step_flow.py --size tiny    # an untrained tiny flow, seconds: the smoke test
"""

from __future__ import annotations

import copy
import statistics
import time

import torch

from common import dh, save, setup
from time_to_quality import real_reference

SIZES = {
    "tiny": {"trajectories": 32, "teacher_steps": 4, "pieces": 2, "steps": 3, "samples": 130, "seeds": 1, "counts": (1, 2)},
    # ten thousand trajectories of 24 Euler steps (chapter 9's reflow pairs), 3,000 fine-tuning steps each: about 25 minutes on 2 CPU cores
    "default": {"trajectories": 10_000, "teacher_steps": 24, "pieces": 4, "steps": 3000, "samples": 1000, "seeds": 3, "counts": (1, 2, 4, 8)},
}


def main() -> None:
    args, size, device, cfg = setup(__doc__.splitlines()[0], SIZES, extra=lambda p: p.add_argument(
        "--models", nargs="+", choices=("reflow", "own-states"), default=["reflow", "own-states"],
        help="what to fine-tune beside the distilled student: reflow, and a second round on the student's own states"))
    n = size["samples"]
    _, reference = real_reference(cfg, n, device)
    if args.size == "tiny":  # no shipped weights needed: an untrained tiny flow
        torch.manual_seed(cfg.seed)
        teacher, made = dh.VelocityNet(dh.UNet(cfg.unet)).to(device), "an untrained tiny flow"
    else:
        teacher, made = dh.load_pretrained("flow", device=device).model, "the shipped flow"
    teacher.eval()
    spec = dh.FlowSamplerSpec("euler", size["teacher_steps"])
    noise = torch.randn((size["trajectories"], 1, 32, 32), generator=torch.Generator().manual_seed(cfg.seed + 10)).to(device)
    start = time.perf_counter()
    pieces = dh.trajectory_segments(teacher, noise, size["pieces"], spec, batch_size=cfg.sample_batch_size)
    teacher_seconds = time.perf_counter() - start
    last = pieces.t_end == 0  # the pieces that end at t = 0: the trajectories' samples, in the noise's order
    pairs = dh.Coupling(pieces.ends[last].clamp(-1, 1), torch.zeros(size["trajectories"], dtype=torch.long), noise)
    print(f"{made}: {size['trajectories']} trajectories by {spec} in {teacher_seconds / 60:.1f} min; {pieces.starts.shape[0]} pieces", flush=True)

    fine_tune = cfg.train.replace(loss_weighting="uniform", timestep_sampling="uniform")
    fine_tune = fine_tune.replace(lr=fine_tune.lr / 4, warmup_steps=min(20, size["steps"] - 1))  # chapter 9's reflow rate
    students, train_minutes = {"flow": teacher}, {}

    def fine_tuned(name: str, start: torch.nn.Module, train_set) -> None:
        torch.manual_seed(cfg.seed)
        state = dh.init_train_state(copy.deepcopy(start).train().requires_grad_(True), fine_tune, num_steps=size["steps"])
        dh.train(state, train_set, dh.MNIST_PIXELS, None, fine_tune, diffusion=dh.FlowConfig(), progress=False)
        students[name], train_minutes[name] = state.ema.model.eval(), state.elapsed / 60
        print(f"{name}: {state.step} steps in {state.elapsed / 60:.1f} min, last loss {state.history.train_loss[-1]:.4f}", flush=True)

    distilled = f"distilled to {size['pieces']} steps"
    if "reflow" in args.models:
        fine_tuned("reflow", teacher, pairs)
    fine_tuned(distilled, teacher, pieces)
    if "own-states" in args.models:  # a second round, on pieces that start at the distilled student's own states
        start = time.perf_counter()
        own = dh.trajectory_segments(teacher, noise, size["pieces"], spec, batch_size=cfg.sample_batch_size, student=students[distilled])
        print(f"pieces from the student's own states in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
        fine_tuned(f"{distilled}, then on its own states", students[distilled], own)

    rows = []
    for name, model in students.items():
        for count in size["counts"]:
            reports = [dh.flow_sample_quality(model, reference, dh.FlowSamplerSpec("euler", count), seed=seed, batch_size=cfg.sample_batch_size)[0]
                       for seed in range(size["seeds"])]
            fids = [r.fid for r in reports]
            rows.append({"model": name, "nfe": count, "fids": [round(f, 3) for f in fids], "fid_mean": round(statistics.mean(fids), 3),
                         "fid_std": round(statistics.stdev(fids), 3) if len(fids) > 1 else None,
                         "confident_mean": round(statistics.mean(r.confident_fraction for r in reports), 4),
                         "min_class_share": round(min(r.min_class_share for r in reports), 4), "collapsed": any(r.collapsed for r in reports)})
            r = rows[-1]
            print(f"{name:>24} Euler {count}: FID {r['fid_mean']:7.2f} ± {r['fid_std'] or 0:5.2f}, confident {r['confident_mean']:6.1%}"
                  f"{' (a seed collapsed)' if r['collapsed'] else ''}", flush=True)
    table = ["| model | " + " | ".join(f"{c} Euler" for c in size["counts"]) + " |", "|---|" + "---:|" * len(size["counts"])]
    for name in students:
        cells = [next(r for r in rows if r["model"] == name and r["nfe"] == c) for c in size["counts"]]
        table.append(f"| {name} | " + " | ".join(f"{r['fid_mean']:.2f} ± {r['fid_std'] or 0:.2f} ({r['confident_mean']:.0%}{'*' if r['collapsed'] else ''})" for r in cells) + " |")
    results = {"teacher": made, "teacher_sampler": str(spec), "trajectories": size["trajectories"], "pieces": size["pieces"],
               "fine_tuning_steps": size["steps"], "lr": fine_tune.lr, "batch_size": fine_tune.batch_size, "teacher_minutes": round(teacher_seconds / 60, 2),
               "train_minutes": {k: round(v, 2) for k, v in train_minutes.items()}, "num_samples": n, "seeds": size["seeds"],
               "fid_floor": round(reference.fid_floor, 2), "rows": rows, "table": "\n".join(table)}
    k = size["pieces"]
    at_k = {r["model"]: r for r in rows if r["nfe"] == k}
    summary = (f"few_step_flow on {dh.describe_device(device)} (n={n}, {size['seeds']} seeds), {k} Euler steps: "
               + ", ".join(f"{name} FID {r['fid_mean']:.2f} ± {r['fid_std'] or 0:.2f}" for name, r in at_k.items()))
    print("\n".join(table))
    name = "few_step_flow" + ("" if args.size == "default" else f"_{args.size}") + ("" if "reflow" in args.models else "_no_reflow")
    save(name, device, args, results, summary)


if __name__ == "__main__":
    main()
