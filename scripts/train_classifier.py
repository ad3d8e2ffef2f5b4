"""Train the MNIST classifier whose features the metrics use, measure it, and write its weights and card.

    DDPM_MNIST_ROOT=/path/to/mnist python scripts/train_classifier.py
    DDPM_MNIST_ROOT=/path/to/mnist python scripts/train_classifier.py --epochs 1 --directory /tmp/classifier   # a trial

Trains on every official training image available (the "train" and "val" splits together), tests on
the 10,000 official test images, and writes ``mnist_classifier.{pt,json}`` into ``--directory``
(default: the package's shipped weights, ``ddpm_helpers/weights/``, which the metrics load).
The accuracy on the card is measured on the half-precision weights that ship.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import ddpm_helpers as dh
from ddpm_helpers.classifier import ClassifierCard, load_classifier, save_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    parser.add_argument("--directory", type=Path, default=dh.WEIGHTS_DIR, help="where to write mnist_classifier.{pt,json} (default: %(default)s)")
    args = parser.parse_args()
    weights, card_path = args.directory / "mnist_classifier.pt", args.directory / "mnist_classifier.json"
    device = dh.pick_device(args.device)
    data = dh.FULL.data
    train, val = dh.load_mnist("train", data), dh.load_mnist("val", data)
    train_set = dh.ImageSet(torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]))
    test_set = dh.load_mnist("test", data)
    print(f"training on {len(train_set.labels)} images, testing on {len(test_set.labels)}, device {device}")
    model, seconds = dh.train_classifier(train_set, epochs=args.epochs, seed=args.seed, device=device)
    float_accuracy = dh.metrics.class_accuracy(dh.metrics.classify(model, test_set.images).logits, test_set.labels)
    card = ClassifierCard(
        test_accuracy=float("nan"), test_confident_fraction=float("nan"), num_test_images=len(test_set.labels), num_train_images=len(train_set.labels),
        epochs=args.epochs, seed=args.seed, train_seconds=round(seconds, 1), device=dh.describe_device(device),
        num_parameters=dh.count_parameters(model),
    )
    save_classifier(model.cpu(), card, weights, card_path)
    shipped = load_classifier(device, weights, card_path)
    logits = dh.metrics.classify(shipped, test_set.images).logits
    accuracy = dh.metrics.class_accuracy(logits, test_set.labels)
    confident = dh.metrics.confident_fraction(logits)
    measured = ClassifierCard(**{**card.__dict__, "test_accuracy": round(accuracy, 5), "test_confident_fraction": round(confident, 5)})
    save_classifier(model.cpu(), measured, weights, card_path)
    print(f"test accuracy: float32 {float_accuracy:.4%}, shipped float16 weights {accuracy:.4%}; "
          f"confident (p >= 0.9) {confident:.2%}; {seconds:.0f} s on {card.device}; wrote {weights} and {card_path.name}")


if __name__ == "__main__":
    main()
