"""Train the book's unconditional DDPM from scratch, scoring samples at wall-clock checkpoints.

    DDPM_MNIST_ROOT=/path/to/mnist python scripts/train_unconditional.py --minutes 5 10 15
    DDPM_MNIST_ROOT=/path/to/mnist python scripts/train_unconditional.py --set train.batch_size=64 train.lr=3e-3 unet.channels=48
    torchrun --nproc_per_node 2 scripts/train_unconditional.py ...      # data-parallel, same code path

Configuration: the full preset (``dh.FULL``) with ``--set component.field=value`` overrides, where
the component is ``data``, ``unet``, ``diffusion``, ``train`` or ``judge`` (e.g. ``diffusion.schedule=cosine``,
``judge.num_steps=50``); a field of the config itself has no prefix (``num_fid_samples=500``).

The run is planned by time: its learning rate cools down over the last
``train.lr_cooldown_fraction`` of the largest ``--minutes`` value, so a checkpoint before the cool-down
scores a model still training at the full learning rate, and the last one the finished model.

Everything goes to ``--out`` (default ``runs/unconditional/``): ``checkpoint.pt`` (resumed if present,
when the largest ``--minutes`` is the same), ``quality.json`` (the log) and, after the last checkpoint, the EMA model
as ``unconditional.pt`` with its card ``unconditional.json``, which ``scripts/publish_weights.py`` can
copy into the package. At each checkpoint the EMA weights draw ``--samples`` images with the book's
judging sampler (``cfg.judge``: DDIM, 100 steps, η = 1) and the MNIST classifier reports FID (against
as many test images), the confidently recognised share and the rarest digit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

import ddpm_helpers as dh

RUNS = Path(__file__).resolve().parents[1] / "runs"
COMPONENTS = ("data", "unet", "diffusion", "train", "judge")
PROBE_STEPS = 10  # steps that measure the training speed at the start of a run


def apply_overrides(cfg: dh.Config, pairs: list[str]) -> dh.Config:
    """``cfg`` with ``component.field=value`` (or top-level ``field=value``) settings replaced.

    Values are read as JSON when they parse (numbers, true/false/null, [lists] → tuples), else as
    plain strings (``cosine``). Each component is rebuilt once, so its checks see all its changes.
    """
    changes: dict[str, dict] = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        if not equals:
            raise SystemExit(f"--set: expected FIELD=VALUE, got {pair!r}")
        component, dot, field = key.rpartition(".")
        if dot and component not in COMPONENTS:
            raise SystemExit(f"--set: unknown component {component!r} in {key!r}; components: {list(COMPONENTS)}")
        fields = set(getattr(cfg, component).to_dict()) if dot else set(cfg.to_dict()) - {"mode", *COMPONENTS}
        if field not in fields:
            owners = [f"{name}.{field}" for name in COMPONENTS if field in getattr(cfg, name).to_dict()]
            hint = f" (did you mean {' or '.join(owners)}?)" if owners and not dot else ""
            raise SystemExit(f"--set: unknown field {key!r}{hint}; fields{' of ' + component if dot else ''}: {sorted(fields)}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        changes.setdefault(component, {})[field] = tuple(value) if isinstance(value, list) else value
    top = changes.pop("", {})
    try:
        return cfg.replace(**top, **{name: getattr(cfg, name).replace(**fields) for name, fields in changes.items()})
    except (TypeError, ValueError) as error:
        raise SystemExit(f"--set: {error}") from error


def steps_until(state: dh.TrainState, seconds: float) -> int:
    """How many more steps reach ``seconds`` of training at the speed so far (a short probe at the start)."""
    if state.step == 0 or state.elapsed == 0:
        return PROBE_STEPS
    return max(1, math.ceil((seconds - state.elapsed) * state.step / state.elapsed))


def agreed_min(value: float, device: torch.device, distributed: bool) -> float:
    """The smallest ``value`` over all processes, so that every process trains the same steps."""
    if not distributed:
        return value
    tensor = torch.tensor([float(value)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[2, 5, 10, 15], help="training-time checkpoints (minutes); the largest is the run's length")
    parser.add_argument("--samples", type=int, default=500, help="samples per evaluation (FID sample count)")
    parser.add_argument("--out", type=Path, default=RUNS / "unconditional", help="folder for the checkpoint, the quality log and the trained model")
    parser.add_argument("--set", nargs="*", default=[], metavar="COMPONENT.FIELD=VALUE", help="config overrides, e.g. train.batch_size=64 unet.channels=48")
    args = parser.parse_args()
    minutes_list = sorted(args.minutes)
    if minutes_list[0] <= 0:
        raise SystemExit(f"--minutes must be positive, got {args.minutes}")

    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if torch.cuda.is_available() else torch.device("cpu")
    cfg = apply_overrides(dh.FULL, args.set)
    if rank == 0:
        print(cfg.summary(), "| judge:", cfg.judge, "| device:", dh.describe_device(device), "| processes:", dist.get_world_size() if distributed else 1)

    train_set, test_set = dh.load_mnist("train", cfg), dh.load_mnist("test", cfg)
    val_set = dh.load_mnist("val", cfg)
    reference = dh.evaluation.real_reference(train_set.images, test_set.images, args.samples, device) if rank == 0 else None
    schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T).to(device)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint, log_path = args.out / "checkpoint.pt", args.out / "quality.json"
    dh.seed_everything(cfg.seed)  # the initial weights; identical in every process
    # The plan is the whole time budget, so the learning rate cools over the end of the last checkpoint's minutes.
    try:
        state = dh.resume_or_init(checkpoint, dh.UNet(cfg.unet).to(device), cfg.diffusion, cfg.train, max_seconds=60 * minutes_list[-1])
    except ValueError as error:  # a checkpoint of another plan, network, schedule or loss
        raise SystemExit(f"{error}\n(to start a new run, choose another --out)") from error
    log = json.loads(log_path.read_text()) if log_path.is_file() and state.step else {"config": cfg.to_dict(), "checkpoints": []}
    if rank == 0:
        print(f"{dh.count_parameters(state.model):,} parameters; {len(train_set.labels)} training images; "
              f"FID floor at n={args.samples}: {reference.fid_floor:.2f}; starting at step {state.step}")

    # One run, planned by time: dh.train stops at a step count, or when the whole planned time is
    # spent, but not at an earlier minute. So, to reach each wall-clock checkpoint, we ask dh.train
    # for as many steps as the speed so far predicts, and again until the training clock has passed
    # the checkpoint; the log records the time actually reached. Each call ends with a validation loss
    # and a checkpoint file, so the last of them belong to this wall-clock checkpoint. (Separate runs
    # planned for 2, 5, ... minutes would each cool their learning rate early, and cost the sum of their times.)
    resumed_at = state.elapsed  # checkpoints up to here were scored before the run was interrupted
    if rank == 0 and resumed_at >= 60 * minutes_list[-1]:
        print(f"the run in {args.out} is complete ({resumed_at / 60:.2f} min of training); see {log_path}")
    for i, minutes in enumerate(minutes_list):
        if 60 * minutes <= resumed_at:
            continue
        while agreed_min(state.elapsed < 60 * minutes, device, distributed):
            more = int(agreed_min(steps_until(state, 60 * minutes), device, distributed))
            dh.train(state, train_set, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, num_steps=state.step + more, val_set=val_set,
                     checkpoint_path=checkpoint, progress=False)
        if i + 1 < len(minutes_list) and state.elapsed >= 60 * minutes_list[i + 1]:
            continue  # the last steps ran past the next checkpoint as well: score the model there, once
        if rank == 0:
            start = time.perf_counter()
            judged = state.ema.model if cfg.diffusion.prediction == "eps" else dh.EpsFromV(state.ema.model, schedule)  # samplers take eps
            report, _ = dh.evaluation.sample_quality(judged, schedule, reference, cfg.judge, seed=cfg.seed, batch_size=cfg.sample_batch_size)
            row = {"minutes": round(state.elapsed / 60, 2), "steps": state.step, "images_per_s": round(state.step * cfg.train.batch_size / state.elapsed, 1),
                   "val_loss": state.history.val_loss[-1], **report._asdict(), "eval_seconds": round(time.perf_counter() - start, 1)}
            log["checkpoints"].append(row)
            log.update(fid_floor=reference.fid_floor, sampler=str(cfg.judge), device=dh.describe_device(device), num_train_images=len(train_set.labels))
            log_path.write_text(json.dumps(log, indent=1) + "\n")
            print(f"{row['minutes']:6.2f} min {state.step:6d} steps ({row['images_per_s']:.0f} img/s): val loss {row['val_loss']:.4f}, "
                  f"FID {report.fid:7.2f}, confident {report.confident_fraction:6.1%}, rarest digit {report.min_class_share:5.1%}", flush=True)
            if minutes == minutes_list[-1]:
                provenance = dh.cards.Provenance(date=datetime.date.today().isoformat(), device=dh.describe_device(device), train_seconds=round(state.elapsed, 1),
                                                 num_train_images=len(train_set.labels), num_steps=state.step, trained_by="scripts/train_unconditional.py")
                quality = {**dh.cards.measures({"fid": round(report.fid, 2), "confident_fraction": round(report.confident_fraction, 4),
                                                "min_class_share": round(report.min_class_share, 4)}, num_samples=reference.num_samples, sampler=str(cfg.judge)),
                           "fid_floor": dh.cards.Measure(round(reference.fid_floor, 2), reference.num_samples)}
                weights = dh.save_pretrained(state.ema.model, "unconditional", diffusion=cfg.diffusion, directory=args.out, provenance=provenance,
                                             quality=quality, train_config=cfg.train.to_dict())
                print(f"wrote {weights} and its card; publish it with: python scripts/publish_weights.py {weights}")
        if distributed:
            dist.barrier()  # the other processes wait here, so rank 0's evaluation is not counted as their training time
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
