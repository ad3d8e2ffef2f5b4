"""A small MNIST classifier that the metrics use as their feature extractor (and its twin for Fashion-MNIST).

Inception features (the usual FID backbone) know nothing about 32×32 handwritten digits, so the book
trains its own classifier and measures FID and KID on its penultimate features (128 numbers per
image) and class accuracy on its logits. Its weights ship with the package
(``weights/mnist_classifier.pt``, with its :class:`~ddpm_helpers.cards.ModelCard`: how it was trained and how accurate it is);
``scripts/train_classifier.py`` reproduces them. Taught in: measuring_quality.

Each data set has its own judge, with the same network and training recipe, chosen by
``load_classifier(dataset=cfg.data.dataset)``: ``mnist_classifier`` for MNIST and
``fashion_mnist_classifier`` for Fashion-MNIST (trained by ``scripts/train_classifier.py --dataset
fashion-mnist``). A judge that is not shipped is a FileNotFoundError that says how to make it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_choice, check_images
from .diffusion import MNIST_PIXELS
from .data import DATASETS, ImageSet
from .cards import ModelCard, read_card, read_model
from .weights import WEIGHTS_DIR, content_digest, load_float_state_dict, read_weights, write_atomic

CLASSIFIER_NAMES = {"mnist": "mnist_classifier", "fashion-mnist": "fashion_mnist_classifier"}  # per data set
CLASSIFIER_NAME = CLASSIFIER_NAMES["mnist"]
CLASSIFIER_WEIGHTS = WEIGHTS_DIR / f"{CLASSIFIER_NAME}.pt"
CLASSIFIER_CARD = WEIGHTS_DIR / f"{CLASSIFIER_NAME}.json"
FEATURE_DIM = 128


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
    )


class MNISTClassifier(nn.Module):
    """Three convolutional blocks (32, 64, 128 channels; 32→16→8→4 pixels), global average pooling
    to a 128-dimensional feature vector, dropout and a linear layer to 10 logits."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            _conv_block(1, 32), nn.MaxPool2d(2),
            _conv_block(32, 64), nn.MaxPool2d(2),
            _conv_block(64, FEATURE_DIM), nn.MaxPool2d(2),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, (B, 128), for images (B, 1, 32, 32) in [-1, 1]."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random small affine distortions (±10° rotation, ±10% scale, ±2 px shift): one grid_sample."""
    b = x.shape[0]
    angle = (torch.rand(b, generator=generator, device=x.device) - 0.5) * (2 * 0.1745)
    scale = 1 + (torch.rand(b, generator=generator, device=x.device) - 0.5) * 0.2
    shift = (torch.rand(b, 2, generator=generator, device=x.device) - 0.5) * (4 / 16)  # ±2 px in [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # pad with background: shift to [0, 2] so zero-padding means -1 after shifting back
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1


def train_classifier(train_set: ImageSet, *, epochs: int = 12, batch_size: int = 128, lr: float = 3e-3, seed: int = 0, device: str | torch.device = "cpu",
                     progress: bool = True, checkpoint: str | os.PathLike | None = None) -> tuple[MNISTClassifier, float]:
    """Train :class:`MNISTClassifier` with AdamW, a one-cycle learning rate and augmentation.

    Deterministic under ``seed`` on the CPU. Returns the model (in eval mode) and the seconds of
    training (summed over every run of a resumed training).

    ``checkpoint``: a file the whole training state is written to, atomically, after every epoch
    (weights, optimiser, learning-rate schedule, the shuffling and augmentation generator, the
    global random state that dropout draws from, the seconds so far). When the file exists the call
    continues from it, and the result is the uninterrupted run's, bit for bit on the CPU; a file
    written for other settings or other training images is refused with the differences named.
    """
    check_images(train_set.images, "train_set.images", value_range=MNIST_PIXELS.value_range)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be a positive learning rate, got {lr!r}")
    if checkpoint is not None and os.path.isdir(checkpoint):
        raise ValueError(f"checkpoint must name a file, got the directory {checkpoint}")
    device = torch.device(device)
    # The initial weights and dropout follow ``seed``; the caller's global random state is restored after.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _fit(train_set, epochs, batch_size, lr, seed, device, progress, checkpoint)


def _identity(train_set: ImageSet, epochs: int, batch_size: int, lr: float, seed: int) -> dict:
    """What a classifier checkpoint must agree on to be continued: the settings and the training images
    (their number and a checksum of images and labels, so a resumed run cannot silently switch data)."""
    return {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
            "num_images": int(train_set.labels.shape[0]), "data_sha256": content_digest([train_set.images, train_set.labels])}


def _fit(train_set: ImageSet, epochs: int, batch_size: int, lr: float, seed: int, device: torch.device, progress: bool,
         checkpoint: str | os.PathLike | None) -> tuple[MNISTClassifier, float]:
    model = MNISTClassifier().to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    images, labels = train_set.images.to(device), train_set.labels.to(device)
    steps_per_epoch = -(-images.shape[0] // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    identity = _identity(train_set, epochs, batch_size, lr, seed) if checkpoint is not None else None
    first_epoch, earlier_seconds = 0, 0.0
    if checkpoint is not None and os.path.isfile(checkpoint):
        saved = read_weights(checkpoint, "classifier checkpoint")
        differences = [f"{key}: checkpoint {saved['identity'].get(key)!r} vs now {value!r}" for key, value in identity.items() if saved["identity"].get(key) != value]
        if differences:
            raise ValueError(f"classifier checkpoint {checkpoint} was written for other settings or data: " + "; ".join(differences))
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["cpu_rng"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        first_epoch, earlier_seconds = saved["epochs_done"], saved["seconds"]
        if progress:
            print(f"resumed from {checkpoint} after epoch {first_epoch}/{epochs} ({earlier_seconds:.0f} s of training)")
    started = time.perf_counter()
    for epoch in range(first_epoch, epochs):
        model.train()
        order = torch.randperm(images.shape[0], generator=generator, device=device)
        total = 0.0
        for start in range(0, images.shape[0], batch_size):
            index = order[start : start + batch_size]
            # no label smoothing: it caps confidence near 0.95, and the metrics count p ≥ 0.9 as "confident"
            loss = F.cross_entropy(model(augment(images[index], generator)), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * index.shape[0]
        seconds = earlier_seconds + time.perf_counter() - started
        if checkpoint is not None:
            state = {"identity": identity, "epochs_done": epoch + 1, "seconds": seconds, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "cpu_rng": torch.get_rng_state()}
            if device.type == "cuda":
                state["cuda_rng"] = torch.cuda.get_rng_state(device)
            write_atomic(state, checkpoint)
        if progress:
            print(f"epoch {epoch + 1}/{epochs}: loss {total / images.shape[0]:.4f} ({seconds:.0f} s)")
    return model.eval(), earlier_seconds + time.perf_counter() - started


def classifier_name(dataset: str = "mnist") -> str:
    """The name of the judge of ``dataset`` (``"mnist"`` or ``"fashion-mnist"``): its weights are
    ``<name>.pt`` and its card ``<name>.json``."""
    check_choice(dataset, tuple(DATASETS), "dataset")
    return CLASSIFIER_NAMES[dataset]


def load_classifier(device: str | torch.device = "cpu", weights: Path | None = None, card_path: Path | None = None, *, dataset: str = "mnist") -> MNISTClassifier:
    """The shipped classifier of ``dataset`` (default MNIST's), in float32 and eval mode, on ``device``;
    its bytes and identity must match its card (:func:`~ddpm_helpers.cards.read_model`). ``weights``
    and ``card_path`` default to the shipped files of that classifier. It is saved like every shipped
    model, with ``dh.save_pretrained(model, classifier_name(dataset), ...)`` (see ``scripts/train_classifier.py``)."""
    name = classifier_name(dataset)
    what = f"the {DATASETS[dataset].title} classifier"
    weights = WEIGHTS_DIR / f"{name}.pt" if weights is None else weights
    card_path = WEIGHTS_DIR / f"{name}.json" if card_path is None else card_path
    if not Path(weights).is_file():
        if dataset == "mnist":
            raise FileNotFoundError(f"no classifier weights at {weights}; run scripts/train_classifier.py to make them")
        raise FileNotFoundError(f"no classifier weights at {weights}: {what} is not shipped yet; make it with scripts/train_classifier.py "
                                f"--dataset {dataset} and ship it with scripts/publish_weights.py")
    _, payload = read_model(weights, card_path, name, what)
    return load_float_state_dict(MNISTClassifier(), payload["state_dict"], f"{what}'s weights").eval().to(device)


def classifier_card(card_path: Path | None = None, *, dataset: str = "mnist") -> ModelCard:
    """The shipped classifier's card (of ``dataset``, default MNIST): how it was trained
    (``provenance``, ``train_config``) and its measured test accuracy and confident fraction (``quality``)."""
    name = classifier_name(dataset)
    return read_card(WEIGHTS_DIR / f"{name}.json" if card_path is None else card_path, f"the {DATASETS[dataset].title} classifier")
