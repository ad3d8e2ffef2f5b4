"""Train the book's unconditional DDPM (or, with ``--flow``, its flow-matching model) from scratch,
scoring samples at wall-clock checkpoints.

    DDPM_MNIST_ROOT=/path/to/mnist python scripts/train_unconditional.py --minutes 5 10 15
    DDPM_MNIST_ROOT=/path/to/mnist python scripts/train_unconditional.py --set train.batch_size=64 train.lr=3e-3 unet.channels=48
    torchrun --nproc_per_node 2 scripts/train_unconditional.py ...      # data-parallel, same code path
    python scripts/train_unconditional.py --smoke                       # seconds: tiny config, a temporary --out
    DDPM_MNIST_ROOT=/path/to/mnist python scripts/train_unconditional.py --flow --steps 12000 --seeds 3   # the shipped flow

Configuration: the full preset (``dh.FULL``; ``dh.TINY`` with ``--smoke``) with ``--set
component.field=value`` overrides read by ``dh.Config.with_overrides``, where the component is
``data``, ``unet``, ``diffusion``, ``train`` or ``judge`` (e.g. ``diffusion.schedule=cosine``,
``diffusion.prediction=v``, ``judge.num_steps=50``); a field of the config itself has no prefix
(``num_fid_samples=500``).

The run is planned by time: its learning rate cools down over the last
``train.lr_cooldown_fraction`` of the largest ``--minutes`` value, so a checkpoint before the cool-down
scores a model still training at the full learning rate, and the last one the finished model. It is
one call of ``dh.train``, which calls back at each of ``--minutes`` (evaluation time is not training time).

Everything goes to ``--out`` (default ``runs/unconditional/``): ``checkpoint.pt`` (resumed if present,
when the largest ``--minutes`` is the same), ``quality.json`` (the log) and, after the last checkpoint, the EMA model
as ``unconditional.pt`` with its card ``unconditional.json``, which ``scripts/publish_weights.py`` can
copy into the package. At each checkpoint the EMA weights draw ``--samples`` images with the book's
judging sampler (``cfg.judge``: the stochastic DPM-Solver++(2M), 20 steps) and the MNIST classifier reports FID (against
as many test images), the confidently recognised share and the rarest digit. A v-predicting network
(``diffusion.prediction=v``) is judged through ``dh.EpsFromV``, and its card says it predicts v.

``--steps N`` plans the run in optimiser steps instead (the learning rate cools over the last steps,
as in the chapters), with checkpoints at the same fractions of it as ``--minutes`` would be of the
time; ``--seeds K`` scores the finished model with K sampling seeds (``cfg.seed`` onwards) and puts
their mean on the card, with the spread in its notes, as the chapters do.

``--flow`` trains flow matching (09_flow_matching) with the same U-Net, trainer and data: the network
is a ``dh.VelocityNet``, the loss is unweighted (``train.loss_weighting=uniform``) and the flow times
are logit-normal (``train.timestep_sampling=logit_normal``, the better of chapter 9's two; ``--set``
can change it). It is judged by ``cfg.judge`` like the diffusion models, read as an eps-network on
``cfg.diffusion``'s schedule through ``dh.EpsFromVelocity`` (one judge for every model: chapter 9 measures
what an ODE sampler would change), and saved as ``flow.pt`` / ``flow.json`` (kind ``flow-unet``) in ``runs/flow/`` by default.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

import ddpm_helpers as dh

RUNS = Path(__file__).resolve().parents[1] / "runs"
SMOKE = {"minutes": [0.01, 0.02], "samples": 200}  # --smoke: about a second of training per checkpoint, tiny config


def parse_args() -> tuple[argparse.Namespace, dh.Config]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=None, help="training-time checkpoints (minutes); the largest is the run's length (default 2 5 10 15)")
    parser.add_argument("--samples", type=int, default=None, help="samples per evaluation (FID sample count; default 500)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the checkpoint, the quality log and the trained model (default runs/unconditional)")
    parser.add_argument("--set", nargs="*", default=[], metavar="COMPONENT.FIELD=VALUE", help="config overrides, e.g. train.batch_size=64 unet.channels=48")
    parser.add_argument("--smoke", action="store_true", help="the smallest run: tiny config, seconds, a temporary --out unless given")
    parser.add_argument("--flow", action="store_true", help="train flow matching instead of DDPM (same network and trainer), saved as 'flow'")
    parser.add_argument("--steps", type=int, default=None, help="plan the run in optimiser steps (checkpoints at the same fractions as the default --minutes)")
    parser.add_argument("--seeds", type=int, default=1, help="sampling seeds that score the finished model for its card (default 1)")
    args = parser.parse_args()
    if args.steps is not None and args.minutes is not None:
        parser.error("give --minutes (a plan in time) or --steps (a plan in steps), not both")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be a positive number of optimiser steps, got {args.steps}")
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.steps is not None:  # checkpoints at 2/15, 5/15, 10/15 and all of the plan, as the default minutes are of 15
        args.step_points = sorted({max(1, round(args.steps * f)) for f in (2 / 15, 5 / 15, 10 / 15, 1)})
    args.minutes = sorted(args.minutes or (SMOKE["minutes"] if args.smoke else [2, 5, 10, 15]))
    args.samples = args.samples or (SMOKE["samples"] if args.smoke else 500)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="train_unconditional-smoke-")) if args.smoke else RUNS / ("flow" if args.flow else "unconditional")
    if args.minutes[0] <= 0:
        parser.error(f"--minutes must be positive, got {args.minutes}")
    try:
        base = dh.TINY if args.smoke else dh.FULL
        if args.flow:  # the flow's own defaults, before the overrides (which may change them)
            base = base.replace(train=base.train.replace(loss_weighting="uniform", timestep_sampling="logit_normal"))
        cfg = base.with_overrides(args.set)
    except ValueError as error:
        parser.error(f"--set: {error}")
    return args, cfg


def judged(model: torch.nn.Module, cfg: dh.Config, schedule: dh.NoiseSchedule) -> torch.nn.Module:
    """The network as the samplers read it: an eps-network, so a v-network goes through dh.EpsFromV and a
    flow through dh.EpsFromVelocity (on the DDPM schedule ``schedule``)."""
    if isinstance(model, dh.VelocityNet):
        return dh.EpsFromVelocity(model, schedule)
    return model if cfg.diffusion.prediction == "eps" else dh.EpsFromV(model, schedule)


def score(model: torch.nn.Module, cfg: dh.Config, args: argparse.Namespace, schedule: dh.NoiseSchedule, reference, seed: int):
    """The quality report of ``model``'s samples by ``cfg.judge`` (``reference.num_samples`` of them, noise from ``seed``)."""
    report, _ = dh.evaluation.sample_quality(judged(model, cfg, schedule), schedule, reference, cfg.judge, seed=seed, batch_size=cfg.sample_batch_size)
    return report


def main() -> None:
    args, cfg = parse_args()
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if torch.cuda.is_available() else torch.device("cpu")
    if rank == 0:
        what = f"flow matching, t {cfg.train.timestep_sampling} | judge: {cfg.judge} (through dh.EpsFromVelocity)" if args.flow else f"prediction: {cfg.diffusion.prediction} | judge: {cfg.judge}"
        print(cfg.summary(), "|", what, "| device:", dh.describe_device(device),
              "| processes:", dist.get_world_size() if distributed else 1)

    train_set, test_set = dh.load_mnist("train", cfg), dh.load_mnist("test", cfg)
    val_set = dh.load_mnist("val", cfg)
    reference = dh.evaluation.real_reference(train_set.images, test_set.images, args.samples, device) if rank == 0 else None
    schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T).to(device)  # the DDPM's; a flow is trained without it and judged on it
    process = dh.FlowConfig() if args.flow else cfg.diffusion
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint, log_path = args.out / "checkpoint.pt", args.out / "quality.json"
    dh.seed_everything(cfg.seed)  # the initial weights; identical in every process
    # The plan is the whole budget (time, or steps with --steps), so the learning rate cools over its end.
    network = dh.UNet(cfg.unet).to(device)
    plan = {"num_steps": args.steps} if args.steps is not None else {"max_seconds": 60 * args.minutes[-1]}
    try:
        state = dh.resume_or_init(checkpoint, dh.VelocityNet(network, process) if args.flow else network, process, cfg.train, **plan)
    except ValueError as error:  # a checkpoint of another plan, network, diffusion or loss
        raise SystemExit(f"{error}\n(to start a new run, choose another --out)") from error
    log = json.loads(log_path.read_text()) if log_path.is_file() and state.step else {"config": cfg.to_dict(), "checkpoints": []}
    if rank == 0:
        print(f"{dh.count_parameters(state.model):,} parameters; {len(train_set.labels)} training images; "
              f"FID floor at n={args.samples}: {reference.fid_floor:.2f}; starting at step {state.step}; writing to {args.out}")

    def evaluate(state: dh.TrainState) -> None:
        """At a wall-clock checkpoint (dh.train has recorded the validation loss and written the checkpoint):
        score the EMA weights, log them, and after the last one save the model and its card."""
        if rank == 0:
            start = time.perf_counter()
            report = score(state.ema.model, cfg, args, schedule, reference, cfg.seed)
            row = {"minutes": round(state.elapsed / 60, 2), "steps": state.step, "images_per_s": round(state.step * cfg.train.batch_size / state.elapsed, 1),
                   "val_loss": state.history.val_loss[-1], **report._asdict(), "eval_seconds": round(time.perf_counter() - start, 1)}
            log["checkpoints"].append(row)
            log.update(fid_floor=reference.fid_floor, sampler=str(cfg.judge), device=dh.describe_device(device), num_train_images=len(train_set.labels))
            log_path.write_text(json.dumps(log, indent=1) + "\n")
            print(f"{row['minutes']:6.2f} min {state.step:6d} steps ({row['images_per_s']:.0f} img/s): val loss {row['val_loss']:.4f}, "
                  f"FID {report.fid:7.2f}, confident {report.confident_fraction:6.1%}, rarest digit {report.min_class_share:5.1%}", flush=True)
            if state.plan_complete:
                save_model(state, cfg, args, schedule, report, reference, len(train_set.labels), device)
        if distributed:
            dist.barrier()  # the other processes wait here (dh.train does not count a callback as training time)

    if state.plan_complete:
        if rank == 0:
            print(f"the run in {args.out} is complete ({state.elapsed / 60:.2f} min of training); see {log_path}")
    else:  # checkpoints up to state.elapsed were scored before the run was interrupted
        points = ({"eval_at_steps": [s for s in args.step_points if s > state.step]} if args.steps is not None
                  else {"eval_at_seconds": [60 * m for m in args.minutes if 60 * m > state.elapsed]})
        dh.train(state, train_set, dh.MNIST_PIXELS, None if args.flow else schedule, cfg.train, diffusion=process, val_set=val_set,
                 checkpoint_path=checkpoint, on_eval=evaluate, progress=False, **points)
    if distributed:
        dist.destroy_process_group()


def save_model(state: dh.TrainState, cfg: dh.Config, args: argparse.Namespace, schedule: dh.NoiseSchedule, report, reference,
               num_train_images: int, device: torch.device) -> None:
    """The EMA weights as ``<out>/unconditional.pt`` (or ``flow.pt``) with their card: quality as the mean
    over ``--seeds`` sampling seeds (the first is the last checkpoint's ``report``), the rarest digit the
    least over the seeds, the spread in the notes."""
    reports = [report] + [score(state.ema.model, cfg, args, schedule, reference, cfg.seed + k) for k in range(1, args.seeds)]
    quality, notes = dh.cards.seed_quality(reports, num_samples=reference.num_samples, sampler=str(cfg.judge), first_seed=cfg.seed)
    provenance = dh.cards.Provenance(date=datetime.date.today().isoformat(), device=dh.describe_device(device), train_seconds=round(state.elapsed, 1),
                                     num_train_images=num_train_images, num_steps=state.step, trained_by="scripts/train_unconditional.py" + (" --flow" if args.flow else ""))
    quality["fid_floor"] = dh.cards.Measure(round(reference.fid_floor, 2), reference.num_samples)  # train vs test images: no sampler
    for k, r in enumerate(reports):
        print(f"seed {cfg.seed + k}: FID {r.fid:.2f}, confident {r.confident_fraction:.1%}, rarest digit {r.min_class_share:.1%}")
    weights = dh.save_pretrained(state.ema.model, "flow" if args.flow else "unconditional", directory=args.out,
                                 diffusion=dh.FlowConfig() if args.flow else cfg.diffusion, provenance=provenance,
                                 quality=quality, train_config=cfg.train.to_dict(), notes=notes)
    print(f"wrote {weights} and its card; publish it with: python scripts/publish_weights.py {weights}")


if __name__ == "__main__":
    main()
