"""Publish a model that a chapter (or a training script) wrote into its run folder: check it, then
copy it into the weights that ship with the package.

    python scripts/publish_weights.py runs/04_training/unconditional
    python scripts/publish_weights.py runs/07_conditional/conditional.pt --force
    python scripts/publish_weights.py --smoke          # the whole route on a tiny model, in temporary folders

The argument names the model by its path without extension, or by its ``.pt`` or ``.json`` file
(a folder holding exactly one model also works). The model is loaded with
``dh.load_pretrained(name, directory=...)``, which checks the weights' SHA-256 against the card,
that the card agrees with the identity inside the weights (name, kind, configs, latent scale and
autoencoder), the file's format and that the weights fit the network their config describes. A
latent model is published only where its own autoencoder (by SHA-256) already is. Its ``<name>.pt`` and ``<name>.json`` are then copied into ``dh.WEIGHTS_DIR``
(``ddpm_helpers/weights/``), each to a temporary file that is checked and renamed into place, and the
published model is loaded once more from there. A model of the same name is replaced only with
``--force``. Chapters never write into the package: this script is the one publishing step.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import tempfile
from pathlib import Path

import torch

import ddpm_helpers as dh
from ddpm_helpers.weights import sha256_of

SUFFIXES = (".pt", ".json")


def shown(path: Path) -> str:
    """``path`` relative to the working folder when it lies inside it."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def model_stem(argument: str) -> Path:
    """The model's path without extension: from the argument as given, or the one model in a folder."""
    path = Path(argument)
    if path.suffix in SUFFIXES:
        return path.with_suffix("")
    if path.is_dir():
        stems = sorted(p.with_suffix("") for p in path.glob("*.json") if p.with_suffix(".pt").is_file())
        if len(stems) != 1:
            found = [p.name for p in stems] or "none"
            raise SystemExit(f"{argument} is a folder; name one model in it (models found: {found})")
        return stems[0]
    return path


def describe(model, diffusion, card: dh.ModelCard) -> str:
    """One line: the kind, size and diffusion of the model and the headline numbers of its card."""
    parts = [card.kind, f"{dh.count_parameters(model):,} parameters"]
    if isinstance(diffusion, dh.FlowConfig):
        parts.append(f"flow matching (time scale {diffusion.time_scale:g})")
    elif diffusion is not None:
        parts.append(f"T={diffusion.T} {diffusion.schedule} {diffusion.prediction}-prediction")
    if card.latent is not None:
        parts.append(f"latent scale {card.latent.scale:.4f} on autoencoder {card.latent.autoencoder!r} ({card.latent.autoencoder_sha256[:12]}...)")
    parts += [f"{metric} {measure.value}" for metric, measure in card.quality.items()]
    parts += [f"trained {card.provenance.date} by {card.provenance.trained_by}"]
    return ", ".join(parts)


def smoke(into: Path | None) -> None:
    """A tiny model written into a temporary run folder and published into a temporary folder (or
    ``--into``, never the package's own weights): the whole route in seconds."""
    if into is not None and into.resolve() == dh.WEIGHTS_DIR.resolve():
        raise SystemExit("--smoke never publishes into the package's weights; give another --into or none")
    with tempfile.TemporaryDirectory(prefix="publish-smoke-") as tmp:
        run_dir, target = Path(tmp) / "run", into or Path(tmp) / "published"
        target.mkdir(parents=True, exist_ok=True)
        cfg = dh.TINY
        torch.manual_seed(cfg.seed)
        provenance = dh.cards.Provenance(date=datetime.date.today().isoformat(), device="cpu", train_seconds=0.0, num_train_images=0, num_steps=0, trained_by="scripts/publish_weights.py --smoke")
        weights = dh.save_pretrained(dh.UNet(cfg.unet), "smoke", directory=run_dir, diffusion=cfg.diffusion, provenance=provenance,
                                     quality={}, train_config=cfg.train.to_dict(), notes="an untrained network: the --smoke run of the publishing route")
        publish(weights.with_suffix(""), target, force=False)


def copy_atomic(pairs: list[tuple[Path, Path]], sha256: str) -> None:
    """Copy each (source, destination) to ``<destination>.tmp``, check the weights' bytes, then
    rename every temporary file into place (weights first, card last). Temporary files never stay."""
    temporaries = [dst.with_name(dst.name + ".tmp") for _, dst in pairs]
    try:
        for (src, _), tmp in zip(pairs, temporaries):
            shutil.copyfile(src, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        if sha256_of(temporaries[0]) != sha256:
            raise SystemExit(f"the copy {temporaries[0]} does not have the SHA-256 of its card; nothing was published")
        for (_, dst), tmp in zip(pairs, temporaries):
            os.replace(tmp, dst)
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="the model to publish: runs/<chapter>/<name>, or its .pt or .json file")
    parser.add_argument("--force", action="store_true", help="replace a published model of the same name")
    parser.add_argument("--into", "--out", dest="into", type=Path, default=None, help=f"where to publish (default: the package's weights folder, {dh.WEIGHTS_DIR})")
    parser.add_argument("--smoke", action="store_true", help="publish a tiny untrained model between temporary folders (seconds; never into the package)")
    args = parser.parse_args()
    if args.smoke:
        if args.model is not None:
            raise SystemExit("--smoke makes its own tiny model; give no model to publish")
        smoke(args.into)
        return
    if args.model is None:
        parser.error("name the model to publish (or pass --smoke)")
    publish(model_stem(args.model), args.into or dh.WEIGHTS_DIR, force=args.force)


def publish(stem: Path, into: Path, *, force: bool) -> None:
    """Check the model at ``stem`` (its weights, card and identity) and copy it into ``into``."""
    name, source = stem.name, stem.parent
    try:
        model, diffusion = dh.load_pretrained(name, directory=source)
        card = dh.pretrained_card(name, directory=source)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"refusing to publish {shown(stem)}: {error}") from error
    if card.latent is not None:
        linked = into / f"{card.latent.autoencoder}.pt"
        if not linked.is_file() or sha256_of(linked) != card.latent.autoencoder_sha256:
            raise SystemExit(f"refusing to publish {shown(stem)}: its autoencoder {card.latent.autoencoder!r} (SHA-256 "
                             f"{card.latent.autoencoder_sha256[:12]}...) is not in {shown(into)}; publish that autoencoder first")
    print(f"checked {shown(stem.with_suffix('.pt'))}: {describe(model, diffusion, card)}")

    if not into.is_dir():
        raise SystemExit(f"--into: no folder at {into}")
    if into.resolve() == source.resolve():
        raise SystemExit(f"{shown(stem)} is already in {shown(into)}; nothing to publish")
    pairs = [(stem.with_suffix(suffix), into / f"{name}{suffix}") for suffix in SUFFIXES]
    existing = [dst for _, dst in pairs if dst.exists()]
    if existing:
        if all(dst.is_file() and sha256_of(dst) == sha256_of(src) for src, dst in pairs):
            print(f"{shown(into)} already holds these exact files ({', '.join(dst.name for _, dst in pairs)}); nothing to do")
            return
        if not force:
            raise SystemExit(f"refusing to overwrite {', '.join(shown(p) for p in existing)}; pass --force to replace the published model {name!r}")
    old_sha = sha256_of(pairs[0][1]) if pairs[0][1].is_file() else None

    copy_atomic(pairs, card.sha256)
    dh.load_pretrained(name, directory=into)  # the published copy loads and matches its card
    size = pairs[0][1].stat().st_size / 2**20
    print(f"published {name!r}: {shown(pairs[0][0])} -> {shown(pairs[0][1])} ({size:.2f} MiB, sha256 {card.sha256[:12]}...), "
          f"{shown(pairs[1][0])} -> {shown(pairs[1][1])}")
    if existing:
        print(f"replaced the previously published {name!r}" + (f" (sha256 {old_sha[:12]}...)" if old_sha else ""))
        if into.resolve() == dh.WEIGHTS_DIR.resolve():
            print("new shipped weights: re-run the chapters that load them and update tests/test_golden.py in the same commit")
    where = "" if into.resolve() == dh.WEIGHTS_DIR.resolve() else f", directory={str(into)!r}"
    print(f"load it with: dh.load_pretrained({name!r}{where})")


if __name__ == "__main__":
    main()
