"""Judge a shipped unconditional model again with the book's judge, and write what it measured onto its card.

    DDPM_MNIST_ROOT=/path/to/mnist python scripts/judge_shipped.py flow --seeds 3 --samples 1000
    python scripts/judge_shipped.py flow --smoke --out /tmp/flow-card   # tiny config, a copy of the model, seconds

A card states how good its weights are with the sampler that judged them when they were trained. When
the book's judge changes (``cfg.judge``), or a model was first judged by another sampler (the flow's first
card: 20 Euler steps), this script samples the weights again by ``cfg.judge`` from sampling seeds
``cfg.seed`` onwards, exactly as ``scripts/train_unconditional.py`` judges a finished run (a flow read as an
eps-network on the book's schedule through ``dh.EpsFromVelocity``, a v-network through ``dh.EpsFromV``,
as ``dh.load_pretrained`` gives it),
and rewrites the card: ``fid``, ``confident_fraction`` and ``min_class_share`` become the judge's, the
earlier values measured by another sampler are kept under their names with that sampler as a suffix
(``fid_euler_20``), ``fid_floor`` is measured again at the same n, and ``notes`` say which seeds.

The weights are not touched, so the card keeps their SHA-256 (``dh.cards.read_model`` checks it on every
load); the card is written atomically. Without ``--write`` or ``--out`` nothing is written: the script
prints the card it would write. ``--out`` copies the weights and the card into a folder and rewrites the
copy there (``--smoke``: the tiny config, into a temporary folder unless ``--out`` names one).
Class-conditional and latent models are judged by their chapters (07, 06), not here: the script refuses them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import re
import shutil
import tempfile
from pathlib import Path

import torch

import ddpm_helpers as dh


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the shipped model, e.g. 'flow' or 'unconditional'")
    parser.add_argument("--seeds", type=int, default=3, help="sampling seeds, cfg.seed onwards (default 3)")
    parser.add_argument("--samples", type=int, default=None, help="samples per seed, against as many test images (default cfg.num_fid_samples)")
    parser.add_argument("--directory", type=Path, default=dh.pretrained.WEIGHTS_DIR, help="where the model and its card are (default: the package's)")
    parser.add_argument("--write", action="store_true", help="rewrite the card (default: print it only)")
    parser.add_argument("--out", type=Path, default=None, help="copy the model into this folder and rewrite the copy's card there")
    parser.add_argument("--smoke", action="store_true", help="tiny config; a copy of the model in --out (default: a temporary folder)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.samples is not None and args.samples < 1:
        parser.error(f"--samples must be a positive number of images, got {args.samples}")
    return args


def suffix(sampler: str) -> str:
    """A metric-name suffix for a sampler's name: 'euler-20' -> 'euler_20'."""
    return re.sub(r"[^a-z0-9]+", "_", sampler.lower()).strip("_")


def rejudged_quality(old: dict, new: dict) -> dict:
    """The card's new quality: the judge's ``new`` measures, then every ``old`` one that the judge did not
    measure again: under its own name where that name is free, else with its sampler as a suffix."""
    quality = dict(new)
    for metric, measure in old.items():
        if metric in quality and measure.sampler is not None and measure.sampler != quality[metric].sampler:
            quality[f"{metric}_{suffix(measure.sampler)}"] = measure
        elif metric not in quality:
            quality[metric] = measure
    return quality


def main() -> None:
    args = parse_args()
    cfg = dh.TINY if args.smoke else dh.FULL
    directory = args.directory
    card = dh.pretrained_card(args.name, directory)   # a clear error if there is no such model
    if card.kind not in dh.cards.PROCESS_KINDS or card.network.get("num_classes") is not None or card.latent is not None:
        raise SystemExit(f"{args.name!r} is of kind {card.kind!r}{' with classes' if card.network.get('num_classes') else ''}"
                         f"{' in a latent space' if card.latent else ''}: this script judges unconditional pixel models "
                         "(ddpm-unet or flow-unet); the conditional and latent models are judged by chapters 07 and 06")
    if args.smoke and args.out is None:   # a copy, so that a smoke run never rewrites the package's card
        args.out = Path(tempfile.mkdtemp(prefix="judge_shipped-smoke-"))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for ext in ("pt", "json"):
            shutil.copy2(directory / f"{args.name}.{ext}", args.out)
        directory, args.write = args.out, True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = dh.load_pretrained(args.name, device=device, directory=directory)
    train, test = dh.load_mnist("train", cfg), dh.load_mnist("test", cfg)
    reference = dh.evaluation.real_reference(train.images, test.images, args.samples or cfg.num_fid_samples, device, dataset=cfg.data.dataset)
    if isinstance(loaded.model, dh.VelocityNet):   # a flow, read as an eps-network on the book's schedule
        schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T).to(device)
        network = dh.EpsFromVelocity(loaded.model, schedule)
    else:   # an eps-network (dh.load_pretrained wraps a v-network in dh.EpsFromV)
        schedule = dh.make_schedule(loaded.diffusion.schedule, loaded.diffusion.T).to(device)
        network = loaded.model
    print(f"{args.name}: {card.kind}, trained {card.provenance.date} on {card.provenance.device}; judged by {cfg.judge} on "
          f"{dh.describe_device(device)}, {reference.num_samples} samples per seed; floor {reference.fid_floor:.2f}")
    reports = []
    for k in range(args.seeds):
        report, _ = dh.evaluation.sample_quality(network, schedule, reference, cfg.judge, seed=cfg.seed + k, batch_size=cfg.sample_batch_size)
        reports.append(report)
        print(f"seed {cfg.seed + k}: FID {report.fid:.2f}, confident {report.confident_fraction:.1%}, rarest class {report.min_class_share:.1%}", flush=True)
    new, notes = dh.cards.seed_quality(reports, num_samples=reference.num_samples, sampler=str(cfg.judge), first_seed=cfg.seed)
    new["fid_floor"] = dh.cards.Measure(round(reference.fid_floor, 2), reference.num_samples)
    others = sorted({m.sampler for m in card.quality.values() if m.sampler not in (None, str(cfg.judge))})
    earlier = f"; the measures by {', '.join(others)} are the earlier card's, whose notes read: {card.notes}" if others else ""
    updated = dataclasses.replace(card, quality=rejudged_quality(card.quality, new),
                                  notes=f"{notes} (scripts/judge_shipped.py, {datetime.date.today().isoformat()}){earlier}")
    for metric, measure in updated.quality.items():
        print(f"  {metric:>36}: {measure.value} (n = {measure.num_samples}, {measure.sampler or 'real images'})")
    if args.write:
        path = dh.cards.write_card(updated, directory / f"{args.name}.json")
        dh.load_pretrained(args.name, directory=directory)   # the rewritten card still describes its weights
        print(f"wrote {path}")
    else:
        print("(not written: pass --write)")


if __name__ == "__main__":
    main()
