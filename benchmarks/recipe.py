"""One training recipe against the clock: train the book's unconditional model with some settings
changed, and judge its EMA weights at fixed minutes of training time.

Each lever of the recipe search (``benchmarks/results/recipe-cpu.md``) is one run of this script
with the same seed, data and network, changed only by ``--set``. The run is planned by time
(``--minutes``: its learning rate cools down over the end of that budget) or by steps (``--steps``,
as the book's recipe before this search was). At each minute of ``--eval-at`` and at the end, the
EMA weights draw ``--samples`` images with the book's judging sampler (``cfg.judge``); the MNIST
classifier scores them (FID against as many real test images, the share recognised with p ≥ 0.9,
the rarest digit's share). Evaluation time is not training time. Needs the MNIST training set.

    DDPM_MNIST_ROOT=/path/to/mnist python benchmarks/recipe.py --name min_snr \\
        --set train.loss_weighting=min_snr --minutes 15 --eval-at 5 10
    python benchmarks/recipe.py --name smoke --smoke      # seconds: tiny config, 4 steps, temporary results

``--checkpoint PATH`` makes a long run survive a stop: the trainer writes its state there atomically
every ``train.checkpoint_every`` steps and before each judgement, the judgements made so far go beside
it (``PATH`` with the suffix ``.judged.json``, also written atomically), and the same command run again
continues from both. The resumed run is the uninterrupted one (the trainer's checkpoints resume exactly,
see chapter 4); only a judgement that was under way when the run stopped is lost, and the results
record the step the run resumed at (``resumed_at_step``).

``--set`` is read by ``dh.Config.with_overrides``; a v-predicting network (``diffusion.prediction=v``)
is judged through ``dh.EpsFromV``. The run is one call of ``dh.train``, which calls back at each minute of
``--eval-at`` (evaluation time is not training time); the end is judged after it returns.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from pathlib import Path

import torch

from common import configure, dh, judged, save
from time_to_quality import real_reference

SMOKE_STEPS, SMOKE_SAMPLES = 4, 200


def judge_seeds(model, schedule, reference, cfg: dh.Config, first: dict | None, num_seeds: int, spec: dh.SamplerSpec | None = None) -> dict:
    """Judge the final weights with sampling seeds ``cfg.seed, cfg.seed + 1, ...`` with ``spec`` (default
    ``cfg.judge``); ``first`` is the judgement at ``cfg.seed`` when it was already made.

    One judgement's confident share has a sampling error of about ±1 point at 1,000 samples; the
    mean over seeds, and their spread, say how much of a difference between runs is the sampler's luck.
    """
    spec = spec or cfg.judge
    per_seed = [] if first is None else [
        {"seed": cfg.seed, "fid": first["fid"], "confident_fraction": first["confident_fraction"], "min_class_share": first["min_class_share"]}]
    for seed in range(cfg.seed + len(per_seed), cfg.seed + num_seeds):
        report, _ = dh.evaluation.sample_quality(model, schedule, reference, spec, seed=seed, batch_size=cfg.sample_batch_size)
        per_seed.append({"seed": seed, "fid": round(report.fid, 2), "confident_fraction": round(report.confident_fraction, 4),
                         "min_class_share": report.min_class_share})
        print(f"  {spec}, sampling seed {seed}: FID {report.fid:6.2f}, confident {report.confident_fraction:6.1%}, rarest digit {report.min_class_share:5.1%}", flush=True)

    def spread(key: str) -> dict[str, float]:
        values = [row[key] for row in per_seed]
        return {"mean": round(statistics.mean(values), 4), "sd": round(statistics.stdev(values), 4)}

    return {"per_seed": per_seed, "fid": spread("fid"), "confident_fraction": spread("confident_fraction"), "min_class_share": spread("min_class_share")}


def judged_so_far(path: Path | None, step: int) -> list[dict]:
    """The judgements recorded beside the checkpoint at ``path`` up to its ``step`` (none for a fresh run)."""
    if path is None or step == 0 or not path.is_file():
        return []
    return [row for row in json.loads(path.read_text()) if row["steps"] <= step]


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it: a stop leaves the old file or the new one."""
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    os.replace(part, path)


def save_model(state: dh.TrainState, cfg: dh.Config, args: argparse.Namespace, results: dict, reference, device: torch.device):
    """The final EMA weights as ``unconditional.pt`` in ``--save-weights`` with their card: the run's
    provenance and, as quality, the mean over the final sampling seeds (each judge's mean, the seeds in the notes)."""
    provenance = dh.cards.Provenance(date=datetime.date.today().isoformat(), device=dh.describe_device(device), train_seconds=round(state.elapsed, 1),
                                     num_train_images=results["num_train_images"], num_steps=state.step, trained_by=f"benchmarks/recipe.py --name {args.name}")
    seeds = results.get("final_seeds")
    first = results["checkpoints"][-1]
    means = ({key: seeds[key]["mean"] for key in ("fid", "confident_fraction", "min_class_share")} if seeds else
             {key: first[key] for key in ("fid", "confident_fraction", "min_class_share")})
    quality = dh.cards.measures(means, num_samples=args.samples, sampler=str(cfg.judge))
    notes = [f"quality: mean over sampling seeds {cfg.seed}-{cfg.seed + args.final_seeds - 1}, {args.samples} samples each, against as many test images"]
    if "second_judge" in results:
        second, steps = results["second_judge"], args.second_judge.rpartition("-")[2]
        quality.update({f"{key}_{steps}_steps": dh.cards.Measure(second[key]["mean"], args.samples, second["sampler"]) for key in ("fid", "confident_fraction")})
    if seeds:
        notes.append("spread over seeds (sd): " + ", ".join(f"{key} {seeds[key]['sd']}" for key in ("fid", "confident_fraction")))
    quality["fid_floor"] = dh.cards.Measure(round(reference.fid_floor, 2), reference.num_samples)
    return dh.save_pretrained(state.ema.model, "unconditional", directory=args.save_weights, diffusion=cfg.diffusion, provenance=provenance,
                              quality=quality, train_config=cfg.train.to_dict(), notes="; ".join(notes))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="the run's name: results go to recipe_<name>-<device>.json")
    p.add_argument("--set", dest="changes", action="append", default=[], metavar="component.field=value")
    plan = p.add_mutually_exclusive_group()
    plan.add_argument("--minutes", type=float, help="plan the run by training time")
    plan.add_argument("--steps", type=int, help=f"plan the run by optimiser steps (--smoke: {SMOKE_STEPS} by default)")
    p.add_argument("--eval-at", type=float, nargs="*", default=[], help="minutes of training at which to judge, besides the end")
    p.add_argument("--eval-at-steps", type=int, nargs="*", default=[], help="optimiser steps at which to judge, besides the end")
    p.add_argument("--samples", type=int, default=None, help=f"samples per judgement (default 1000; --smoke: {SMOKE_SAMPLES})")
    p.add_argument("--final-seeds", type=int, default=1,
                   help="sampling seeds for the judgement of the final weights (seed, seed+1, ...): more seeds narrow its spread")
    p.add_argument("--second-judge", default=None, metavar="METHOD-STEPS",
                   help="also judge the final weights with this sampler over the same seeds, e.g. dpm-solver++-sde-20")
    p.add_argument("--save-weights", type=Path, default=None,
                   help="write the final EMA weights into this folder as unconditional.pt with its card (dh.save_pretrained), "
                        "for scripts/publish_weights.py; the card's quality is the mean over --final-seeds")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="the training state's file: written as the run goes, and continued from when it exists (same command)")
    p.add_argument("--device", default=None)
    p.add_argument("--results", type=Path, default=None, help="folder for the JSON results (default: benchmarks/results; a temporary folder for --smoke)")
    p.add_argument("--smoke", action="store_true", help="the smallest run: tiny config and the shipped MNIST subset, seconds")
    args = p.parse_args()
    if args.final_seeds < 1:
        p.error(f"--final-seeds must be at least 1 (the judgement at the config's seed), got {args.final_seeds}")
    if args.second_judge and args.final_seeds < 2:
        p.error(f"--second-judge compares spreads over seeds: it needs --final-seeds 2 or more, got {args.final_seeds}")
    if args.minutes is None and args.steps is None:
        if not args.smoke:
            p.error("plan the run with --minutes or --steps")
        args.steps = SMOKE_STEPS
    args.samples = args.samples or (SMOKE_SAMPLES if args.smoke else 1000)
    args.set = args.changes
    args.size = f"{args.minutes} min" if args.minutes else f"{args.steps} steps"

    cfg = configure(p, args, smoke=args.smoke)
    device = dh.pick_device(args.device)
    train_set, reference = real_reference(cfg, args.samples, device)
    schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T).to(device)
    torch.manual_seed(cfg.seed)
    model = dh.UNet(cfg.unet).to(device)
    plan_kwargs = {"max_seconds": 60 * args.minutes} if args.minutes else {"num_steps": args.steps}
    if args.checkpoint is None:
        state, rows, judged_path = dh.init_train_state(model, cfg.train, **plan_kwargs), [], None
    else:
        args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        state = dh.resume_or_init(args.checkpoint, model, cfg.diffusion, cfg.train, **plan_kwargs)
        judged_path = args.checkpoint.with_name(args.checkpoint.name + ".judged.json")
        rows = judged_so_far(judged_path, state.step)
        if state.step:
            print(f"resumed from {args.checkpoint} at step {state.step} ({state.elapsed / 60:.1f} min of training), "
                  f"{len(rows)} judgement(s) already made", flush=True)
    resumed_at = state.step if state.step else None

    def judge(state: dh.TrainState) -> None:
        start = time.perf_counter()
        report, _ = dh.evaluation.sample_quality(judged(state.ema.model, cfg, schedule), schedule, reference, cfg.judge,
                                                 seed=cfg.seed, batch_size=cfg.sample_batch_size)
        rows.append({"train_minutes": round(state.elapsed / 60, 2), "steps": state.step, "fid": round(report.fid, 2),
                     "confident_fraction": round(report.confident_fraction, 4), "min_class_share": report.min_class_share,
                     "class_shares": report.class_shares, "images_per_second": round(state.step * cfg.train.batch_size / state.elapsed, 1),
                     "sampling_seconds": round(time.perf_counter() - start, 1)})
        print(f"{rows[-1]['train_minutes']:6.2f} min, {state.step:6d} steps: FID {report.fid:6.2f}, "
              f"confident {report.confident_fraction:6.1%}, rarest digit {report.min_class_share:5.1%}", flush=True)
        if judged_path is not None:
            write_atomically(judged_path, json.dumps(rows, indent=1))

    dh.train(state, train_set, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, on_eval=judge, checkpoint_path=args.checkpoint,
             eval_at_seconds=[60 * minutes for minutes in args.eval_at], eval_at_steps=args.eval_at_steps, progress=False)
    if not rows or rows[-1]["steps"] != state.step:  # the end, unless an --eval-at minute fell on it
        judge(state)
    results = {"name": args.name, "changes": args.changes, "config": cfg.to_dict(), "sampler": str(cfg.judge),
               "num_samples": args.samples, "fid_floor": round(reference.fid_floor, 2),
               "num_train_images": len(train_set.labels), "checkpoints": rows, "resumed_at_step": resumed_at}
    last = rows[-1]
    summary = (f"recipe {args.name} on {dh.describe_device(device)}: {last['train_minutes']:.1f} min, {last['steps']} steps: "
               f"FID {last['fid']:.2f} (floor {reference.fid_floor:.2f}, n={args.samples}), "
               f"{last['confident_fraction']:.1%} confident, rarest digit {last['min_class_share']:.1%}")
    if args.final_seeds > 1:
        results["final_seeds"] = judge_seeds(judged(state.ema.model, cfg, schedule), schedule, reference, cfg, last, args.final_seeds)
        fid, confident = results["final_seeds"]["fid"], results["final_seeds"]["confident_fraction"]
        summary += (f"; over sampling seeds {cfg.seed}-{cfg.seed + args.final_seeds - 1}: FID {fid['mean']:.2f} ± {fid['sd']:.2f}, "
                    f"confident {confident['mean']:.1%} ± {confident['sd']:.1%}")
    if args.second_judge:
        method, _, steps = args.second_judge.rpartition("-")
        second = dh.SamplerSpec(method, num_steps=int(steps))
        results["second_judge"] = {"sampler": str(second), **judge_seeds(judged(state.ema.model, cfg, schedule), schedule, reference, cfg, None,
                                                                         args.final_seeds, second)}
        fid, confident = results["second_judge"]["fid"], results["second_judge"]["confident_fraction"]
        summary += f"; {second}: FID {fid['mean']:.2f} ± {fid['sd']:.2f}, confident {confident['mean']:.1%} ± {confident['sd']:.1%}"
    if args.save_weights:
        results["saved_weights"] = str(save_model(state, cfg, args, results, reference, device))
    save(f"recipe_{args.name}", device, args, results, summary)


if __name__ == "__main__":
    main()
