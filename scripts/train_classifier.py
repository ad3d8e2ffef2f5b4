"""Train the classifier whose features the metrics use (MNIST's, or Fashion-MNIST's with ``--dataset``),
measure it, and write its weights and card.

    DDPM_MNIST_ROOT=/path/to/mnist python scripts/train_classifier.py --out runs/classifier
    python scripts/publish_weights.py runs/classifier/mnist_classifier --force     # then ship it
    python scripts/train_classifier.py --dataset fashion-mnist --out runs/classifier   # the Fashion-MNIST judge
    python scripts/publish_weights.py runs/classifier/fashion_mnist_classifier
    python scripts/train_classifier.py --smoke [--dataset fashion-mnist]           # seconds: tiny, temporary folder

Trains on every official training image available (the "train" and "val" splits together), tests on
the 10,000 official test images (accuracy, confident share, and the FID floor of its features: real
training against real test images, n = 2,048), and writes ``mnist_classifier.{pt,json}`` (or
``fashion_mnist_classifier.{pt,json}``) into ``--out`` with
``dh.save_pretrained``, like every shipped model (one card schema). Publishing into the package is
``scripts/publish_weights.py``'s step, never this script's. The accuracy on the card is measured on
the half-precision weights that ship. ``--smoke`` trains one epoch on the bundled subset into a
temporary folder: the whole route in seconds, not a usable classifier. A stopped training continues:
the state is written atomically after every epoch to ``<out>/<name>.training-state.pt`` (or
``--checkpoint``), the same command run again resumes from it (``dh.train_classifier(checkpoint=...)``,
the same weights as a run never stopped), and the file is removed once the weights and card are written. Fashion-MNIST is found as
``dh.load_mnist`` finds it (``DDPM_FASHION_MNIST_ROOT``, Debian's ``dataset-fashion-mnist``, or a download).
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from pathlib import Path

import torch

import ddpm_helpers as dh
from ddpm_helpers.cards import Provenance, measures
from ddpm_helpers.classifier import classifier_name
from ddpm_helpers.data import DATASETS

FLOOR_SAMPLES = 2_048


def train_and_save(out: Path, data: dh.DataConfig, *, epochs: int, seed: int, device: torch.device, trained_by: str, checkpoint: Path | None = None) -> Path:
    """Train, save, reload the saved (half-precision) weights, measure them on the test images, and
    save again with the measured card; returns the weights' path. ``data.dataset`` chooses the data set and the name.
    ``checkpoint``: the training state's file (continued from when it exists, removed at the end); by default
    ``<out>/<name>.training-state.pt``."""
    name, title = classifier_name(data.dataset), DATASETS[data.dataset].title
    train, val = dh.load_mnist("train", data), dh.load_mnist("val", data)
    train_set = dh.ImageSet(torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]))
    test_set = dh.load_mnist("test", data)
    print(f"training the {title} classifier on {len(train_set.labels)} images, testing on {len(test_set.labels)}, device {device}")
    settings = {"epochs": epochs, "batch_size": 128, "lr": 3e-3, "seed": seed}
    checkpoint = checkpoint or out / f"{name}.training-state.pt"
    model, seconds = dh.train_classifier(train_set, **settings, device=device, checkpoint=checkpoint)
    model = model.cpu()
    provenance = Provenance(date=datetime.date.today().isoformat(), device=dh.describe_device(device), train_seconds=round(seconds, 1),
                            num_train_images=len(train_set.labels), num_steps=epochs * -(-len(train_set.labels) // settings["batch_size"]), trained_by=trained_by)
    common = dict(directory=out, diffusion=None, provenance=provenance, train_config=settings)
    weights = dh.save_pretrained(model, name, quality={}, **common, notes="not yet measured")
    shipped = dh.load_classifier(device, weights, weights.with_suffix(".json"), dataset=data.dataset)
    logits = dh.metrics.classify(shipped, test_set.images).logits
    accuracy, confident = dh.metrics.class_accuracy(logits, test_set.labels), dh.metrics.confident_fraction(logits)
    quality = measures({"test_accuracy": round(accuracy, 5), "test_confident_fraction": round(confident, 5)}, num_samples=len(test_set.labels))
    # The judge's own FID floor: its features of as many real training and test images (the first of each,
    # as dh.evaluation.real_reference compares them); n = 2,048 where the images allow, fast.ai's n for Fashion-MNIST.
    num_floor = min(FLOOR_SAMPLES, len(train_set.labels), len(test_set.labels))
    floor = dh.metrics.fid(dh.metrics.classify(shipped, train_set.images[:num_floor]).features, dh.metrics.classify(shipped, test_set.images[:num_floor]).features)
    quality.update(measures({"fid_floor": round(floor, 3)}, num_samples=num_floor))
    about = "" if data.dataset == "mnist" else f"; trained and tested on {title}"
    weights = dh.save_pretrained(model, name, quality=quality, **common,
                                 notes=f"{dh.count_parameters(model):,} parameters; measured on the shipped half-precision weights{about}")
    checkpoint.unlink()  # the weights and their measured card are written: the next run in this folder starts afresh
    print(f"test accuracy of the shipped float16 weights {accuracy:.4%}; confident (p >= 0.9) {confident:.2%}; FID floor {floor:.3f} at n = {num_floor}; "
          f"{seconds:.0f} s on {provenance.device}; wrote {weights} and its card")
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=tuple(DATASETS), default="mnist", help="the data set the classifier judges (default mnist)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    parser.add_argument("--out", type=Path, default=None, help="where to write <name>.{pt,json} (default: runs/classifier; with --smoke a temporary folder)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="the training state's file, written after every epoch and continued from by the same command (default: <out>/<name>.training-state.pt)")
    parser.add_argument("--smoke", action="store_true", help="one epoch on the bundled subset (seconds), into --out or a temporary folder")
    args = parser.parse_args()
    if args.epochs < 1:
        raise SystemExit(f"--epochs must be a positive number of epochs, got {args.epochs}")
    if args.out is not None and args.out.resolve() == dh.WEIGHTS_DIR.resolve():
        raise SystemExit(f"--out must not be the package's weights folder {dh.WEIGHTS_DIR}; publish with scripts/publish_weights.py")
    flag = "" if args.dataset == "mnist" else f" --dataset {args.dataset}"
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="classifier-smoke-") as tmp:
            train_and_save(args.out or Path(tmp), dh.TINY.data.replace(dataset=args.dataset), epochs=1, seed=args.seed, device=torch.device("cpu"),
                           trained_by=f"scripts/train_classifier.py --smoke{flag}", checkpoint=args.checkpoint)
        return
    train_and_save(args.out or Path("runs/classifier"), dh.FULL.data.replace(dataset=args.dataset), epochs=args.epochs, seed=args.seed, device=dh.pick_device(args.device),
                   trained_by=f"scripts/train_classifier.py{flag}", checkpoint=args.checkpoint)


if __name__ == "__main__":
    main()
