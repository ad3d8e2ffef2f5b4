import matplotlib

matplotlib.use("Agg")

import imageio.v3 as iio  # noqa: E402
from PIL import Image  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import ddpm_helpers as dh  # noqa: E402


def test_image_grid_tiles_and_rescales():
    images = torch.stack([torch.full((1, 4, 4), v) for v in (-1.0, 0.0, 1.0)])
    grid = dh.image_grid(images, nrow=2, padding=1)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1)
    assert grid[1, 1] == 0.0 and grid[1, 6] == 0.5 and grid[6, 1] == 1.0


def test_save_gif_writes_every_frame(tmp_path):
    frames = [torch.full((2, 1, 8, 8), v) for v in np.linspace(-1, 1, 5)]
    path = dh.save_gif(frames, tmp_path / "out.gif", nrow=2, duration=0.05, hold_last=1.0, scale=2)
    read = iio.imread(path, index=None)
    assert read.shape[0] == 5
    assert read.shape[1:3] == (2 * 12, 2 * 22)  # scale 2 of a 1×2 grid of 8×8 images with 2-pixel padding
    with Image.open(path) as gif:
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert durations == [50, 50, 50, 50, 1000]  # the last frame is held


def test_save_gif_keeps_the_requested_grey_levels_and_shrinks_noise(tmp_path):
    g = torch.Generator().manual_seed(0)
    frames = [torch.rand((4, 1, 16, 16), generator=g) * 2 - 1 for _ in range(6)]
    with Image.open(dh.save_gif(frames, tmp_path / "four.gif", nrow=4, levels=4, scale=1)) as gif:
        values = set()
        for i in range(gif.n_frames):
            gif.seek(i)
            values |= set(np.unique(np.asarray(gif.convert("L"))).tolist())
    assert values <= {0, 85, 170, 255}
    full = dh.save_gif(frames, tmp_path / "full.gif", nrow=4, scale=1).stat().st_size
    sixteen = dh.save_gif(frames, tmp_path / "sixteen.gif", nrow=4, scale=1, levels=16).stat().st_size
    assert sixteen < 0.7 * full
    with pytest.raises(ValueError, match="levels must lie in"):
        dh.save_gif(frames, tmp_path / "bad.gif", levels=1)


def test_plot_functions_label_their_axes():
    ax = dh.plot_losses([1.0] * 100, [50, 100], [0.9, 0.8], smooth=10)
    assert ax.get_xlabel() == "training step" and ax.get_ylabel() == "loss" and ax.get_title()
    fig = dh.show_strip([torch.zeros(2, 1, 8, 8)] * 3, ["a", "b", "c"], row_labels=["x", "y"], title="t")
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "a"
    assert dh.show_images(torch.zeros(4, 1, 8, 8), title="grid").get_title() == "grid"


def test_viz_bad_inputs():
    with pytest.raises(ValueError, match="1 channel"):
        dh.image_grid(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"images must have shape \(B, C, H, W\)"):
        dh.image_grid(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="frames must not be empty"):
        dh.save_gif([], "x.gif")
    with pytest.raises(ValueError, match="same length"):
        dh.show_strip([torch.zeros(1, 1, 4, 4)], ["a", "b"])


def test_plot_tsne_colours_each_digit_and_keeps_the_legend_off_the_data():
    import matplotlib.pyplot as plt

    points, labels = np.random.default_rng(0).normal(size=(50, 2)), np.arange(50) % 10
    _, ax = plt.subplots()
    dh.plot_tsne(points, labels, ax, title="map")
    collections = ax.collections
    assert len(collections) == 10 and len(set(dh.DIGIT_COLORS)) == 10
    assert [c.get_label() for c in collections] == [str(d) for d in range(10)]
    assert ax.get_legend().get_bbox_to_anchor() is not None and not ax.get_xticks().size
    with pytest.raises(ValueError, match=r"points must have shape \(N, 2\)"):
        dh.plot_tsne(points[:, :1], labels, ax)


def test_plain_log_axis_writes_plain_numbers():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [0.05, 2.0, 30.0])
    dh.plain_log_axis(ax)
    fig.canvas.draw()
    assert ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all("10^" not in t and "times" not in t for t in labels) and "2" in labels
    with pytest.raises(ValueError, match="axis must be"):
        dh.plain_log_axis(ax, "z")
