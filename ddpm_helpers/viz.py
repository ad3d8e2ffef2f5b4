"""Figures: image grids, denoising strips, GIFs and loss curves, in one colour-blind-safe palette.

Images arrive as (B, C, H, W) tensors in [-1, 1]; conversion to [0, 1] happens here, at the edge.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import imageio.v3 as iio
import matplotlib.pyplot as plt
import numpy as np
import torch

from .checks import check_finite, check_images
from .data import to_pixel_range

# Okabe & Ito (2008): distinguishable with every common form of colour blindness.
COLORS = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "vermillion": "#D55E00",
    "sky": "#56B4E9",
    "purple": "#CC79A7",
    "yellow": "#F0E442",
    "black": "#000000",
}
SCHEDULE_COLORS = {"linear": COLORS["blue"], "cosine": COLORS["orange"]}


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """Tile (B, 1, H, W) images in [-1, 1] into one (rows·(H+p)+p, nrow·(W+p)+p) array in [0, 1]."""
    check_images(images, "images")
    if images.shape[1] != 1:
        raise ValueError(f"images must have 1 channel, got {images.shape[1]}")
    if nrow < 1:
        raise ValueError(f"nrow must be positive, got {nrow}")
    pixels = to_pixel_range(images.detach().float().cpu())[:, 0].numpy()
    count, height, width = pixels.shape
    ncol = min(nrow, count)
    nrows = -(-count // ncol)
    grid = np.ones((nrows * (height + padding) + padding, ncol * (width + padding) + padding), dtype=np.float32)
    for i, image in enumerate(pixels):
        r, c = divmod(i, ncol)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def show_images(images: torch.Tensor, nrow: int = 8, title: str | None = None, ax: plt.Axes | None = None) -> plt.Axes:
    """Plot a grid of images (see :func:`image_grid`) on ``ax`` (a new figure when None)."""
    grid = image_grid(images, nrow)
    if ax is None:
        _, ax = plt.subplots(figsize=(grid.shape[1] / 40, grid.shape[0] / 40 + (0.3 if title else 0)))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def show_strip(images: Sequence[torch.Tensor], labels: Sequence[str], title: str | None = None, row_labels: Sequence[str] | None = None) -> plt.Figure:
    """A table of images: one column per entry of ``images`` (each (B, 1, H, W)), one row per batch item.

    Used for denoising strips (columns are timesteps) and schedule comparisons (rows are schedules).
    """
    if len(images) != len(labels):
        raise ValueError(f"images and labels must have the same length, got {len(images)} and {len(labels)}")
    rows = images[0].shape[0]
    fig, axes = plt.subplots(rows, len(images), figsize=(1.1 * len(images), 1.2 * rows), squeeze=False)
    for col, (batch, label) in enumerate(zip(images, labels)):
        for row in range(rows):
            ax = axes[row, col]
            ax.imshow(to_pixel_range(batch[row, 0].detach().float().cpu()).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=9)
            if col == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[row], fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_gif(frames: Sequence[torch.Tensor], path: str | os.PathLike, nrow: int = 8, duration: float = 0.08, scale: int = 2, hold_last: float = 1.5, levels: int = 256) -> Path:
    """Write a looping GIF whose i-th frame is the grid of ``frames[i]`` ((B, 1, H, W) in [-1, 1]).

    Each frame shows for ``duration`` seconds, the last for ``hold_last`` seconds; ``scale``
    enlarges pixels (nearest neighbour; ``scale=1`` and enlarging in the browser keeps files
    smallest). ``levels`` grey levels (2 to 256) are kept: noisy frames compress poorly, and 16
    levels make them about 2.5 times smaller at no visible cost. Returns the path.
    """
    if not frames:
        raise ValueError("frames must not be empty")
    for i, frame in enumerate(frames):
        check_images(frame, f"frames[{i}]")
        check_finite(frame, f"frames[{i}]")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if not 2 <= levels <= 256:
        raise ValueError(f"levels must lie in [2, 256], got {levels}")
    step = 255 / (levels - 1)
    grids = [(np.round(image_grid(frame, nrow) * (levels - 1)) * step).round().astype(np.uint8) for frame in frames]
    grids = [np.kron(grid, np.ones((scale, scale), dtype=np.uint8)) for grid in grids]
    durations = [round(duration * 1000)] * (len(grids) - 1) + [round(hold_last * 1000)]
    if len(grids) == 1:  # a still image: the GIF writer takes one duration, not a list of one
        durations = durations[0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(grids), extension=".gif", duration=durations, loop=0)
    return path


def plot_losses(train_loss: Sequence[float], val_steps: Sequence[int] = (), val_loss: Sequence[float] = (), ax: plt.Axes | None = None, smooth: int = 50) -> plt.Axes:
    """Training loss per step (raw, faint, and a moving average over ``smooth`` steps) and validation loss."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    steps = np.arange(1, len(train_loss) + 1)
    ax.plot(steps, train_loss, color=COLORS["sky"], alpha=0.35, linewidth=0.8, label="train (per step)")
    if len(train_loss) >= smooth > 1:
        kernel = np.ones(smooth) / smooth
        ax.plot(steps[smooth - 1 :], np.convolve(train_loss, kernel, mode="valid"), color=COLORS["blue"], label=f"train ({smooth}-step mean)")
    if len(val_loss):
        ax.plot(val_steps, val_loss, "o-", color=COLORS["vermillion"], markersize=3, label="validation")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.set_title("Training and validation loss")
    ax.legend()
    return ax


#: One colour per digit 0-9: Paul Tol's "muted" scheme (distinct under the common colour-vision
#: deficiencies) and a dark grey for the tenth.
DIGIT_COLORS = ("#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE", "#882255", "#44AA99", "#999933", "#AA4499", "#555555")


def plot_tsne(points: np.ndarray, labels: Sequence[int], ax: plt.Axes, title: str | None = None, size: float = 3.0, legend: bool = True, alpha: float = 1.0) -> plt.Axes:
    """A 2-D embedding (N, 2), e.g. from t-SNE, one colour per digit (:data:`DIGIT_COLORS`), with a legend
    outside the data. t-SNE axes have no units, so their ticks are hidden."""
    points, labels = np.asarray(points), np.asarray(labels)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(labels):
        raise ValueError(f"points must have shape (N, 2) with one label each, got {points.shape} and {len(labels)} labels")
    for digit in range(10):
        chosen = labels == digit
        ax.scatter(points[chosen, 0], points[chosen, 1], s=size, color=DIGIT_COLORS[digit], label=str(digit), linewidths=0, alpha=alpha, rasterized=True)
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    if legend:
        ax.legend(title="digit", loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3 / max(size, 0.1) * 2, fontsize=8, frameon=False)
    return ax


def plain_log_axis(ax: plt.Axes, axis: str = "y") -> plt.Axes:
    """Put ``axis`` ("x" or "y") on a log scale with tick labels written as plain numbers (0.05, 2, 30)
    rather than powers of ten such as 6 × 10⁰."""
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    from matplotlib.ticker import FuncFormatter, LogLocator

    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_formatter(FuncFormatter(lambda value, _: ""))
    return ax
