"""Draw the book's schematic figures (no data, no network: diagrams) as SVG into ``book/figures/``.

    python scripts/make_schematics.py                 # writes book/figures/*.svg
    python scripts/make_schematics.py --out /tmp/x    # into another folder (the tests do this)

The figures, and the chapter that shows each one:

* ``chain.svg``: the graphical model of the diffusion chain, forward q and reverse p_θ (chapter 1);
* ``resblock.svg``: the U-Net's residual block as ``dh.ResBlock`` computes it (chapter 3);
* ``attention.svg``: the U-Net's self-attention block as ``dh.SelfAttention`` computes it (chapter 3);
* ``ddim_geometry.svg``: a deterministic DDIM step (η = 0) in the plane of x̂0 and ε_θ (chapter 5);
* ``guidance_geometry.svg``: classifier-free guidance as vectors, with the book's scale s (chapter 7).

Matplotlib only (importing ``ddpm_helpers`` would import torch), so the colours of ``dh.COLORS`` are
copied here; ``tests/test_schematics.py`` checks that they agree. The output is deterministic: the
same matplotlib gives the same bytes (fixed ``svg.hashsalt``, no date in the metadata, text drawn as
paths so no font is needed to view it).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure  # no pyplot: no backend, no global state
from matplotlib.patches import Arc, Circle, FancyArrowPatch, FancyBboxPatch

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "book" / "figures"

# dh.COLORS (ddpm_helpers/viz.py): Okabe & Ito (2008), distinguishable with every common colour blindness.
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
GREY = "#555555"

STYLE = {
    "svg.hashsalt": "ddpm-mnist-book",  # fixed ids inside the SVG
    "svg.fonttype": "path",  # glyphs as paths: looks the same without any font installed
    "font.family": "DejaVu Sans",
    "font.size": 11,
    "mathtext.fontset": "cm",  # Computer Modern, like the book's MathJax
    "axes.unicode_minus": True,
}
METADATA = {"Date": None, "Creator": "scripts/make_schematics.py (matplotlib)"}


def tint(color: str, amount: float) -> str:
    """``color`` mixed with white: ``amount`` 0 is white, 1 the colour itself (a light fill for boxes)."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(255 - amount * (255 - c)):02X}" for c in (r, g, b))


def canvas(width: float, xlim: tuple[float, float], ylim: tuple[float, float]):
    """A figure ``width`` inches wide, as tall as ``xlim`` and ``ylim`` need at equal scale on x and y,
    holding one frameless axes that fills it."""
    fig = Figure(figsize=(width, width * (ylim[1] - ylim[0]) / (xlim[1] - xlim[0])))
    fig.patch.set_facecolor("white")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def box(ax, x: float, y: float, text: str, color: str, width: float = 2.6, height: float = 0.46, size: float = 11, round_: bool = True) -> None:
    """A labelled box centred at (x, y)."""
    style = "round,pad=0,rounding_size=0.08" if round_ else "square,pad=0"
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle=style,
                                facecolor=tint(color, 0.25), edgecolor=color, linewidth=1.3, zorder=2))
    ax.text(x, y, text, ha="center", va="center", fontsize=size, zorder=3)


def arrow(ax, start, end, color: str = COLORS["black"], rad: float = 0.0, width: float = 1.3, style: str = "-|>", dashed: bool = False, shrink: float = 0.0, zorder: int = 1) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=color, linewidth=width,
                                 connectionstyle=f"arc3,rad={rad}", linestyle=(0, (4, 3)) if dashed else "-",
                                 shrinkA=shrink, shrinkB=shrink, zorder=zorder))


def operator(ax, x: float, y: float, symbol: str, color: str = COLORS["black"], radius: float = 0.2) -> None:
    """A circled operator (⊕) at (x, y)."""
    ax.add_patch(Circle((x, y), radius, facecolor="white", edgecolor=color, linewidth=1.3, zorder=2))
    ax.text(x, y, symbol, ha="center", va="center", fontsize=15, zorder=3)


# --- 1. the chain -------------------------------------------------------------------------------

def chain() -> Figure:
    """x_0 → x_1 → ⋯ → x_{t−1} → x_t → ⋯ → x_T: forward q above, reverse p_θ below."""
    fig, ax = canvas(6.6, (-0.9, 13.0), (-2.25, 2.25))
    nodes = [(0, r"$x_0$"), (2, r"$x_1$"), (4, None), (6, r"$x_{t-1}$"), (8, r"$x_t$"), (10, None), (12, r"$x_T$")]
    radius = 0.55
    for x, label in nodes:
        if label is None:
            ax.text(x, 0, r"$\cdots$", ha="center", va="center", fontsize=20)
        else:
            ax.add_patch(Circle((x, 0), radius, facecolor="white", edgecolor=COLORS["black"], linewidth=1.4, zorder=2))
            ax.text(x, 0, label, ha="center", va="center", fontsize=15, zorder=3)
    forward, reverse = COLORS["vermillion"], COLORS["blue"]
    for (x1, _), (x2, _) in zip(nodes, nodes[1:]):
        main = x1 == 6
        lw = 1.8 if main else 1.1
        arrow(ax, (x1 + 0.35, 0.45), (x2 - 0.35, 0.45), color=forward, rad=-0.45, width=lw)
        arrow(ax, (x2 - 0.35, -0.45), (x1 + 0.35, -0.45), color=reverse, rad=-0.45, width=lw)
    ax.text(7, 1.5, r"$q(x_t \mid x_{t-1})$", ha="center", va="bottom", fontsize=14, color=forward)
    ax.text(7, -1.5, r"$p_\theta(x_{t-1} \mid x_t)$", ha="center", va="top", fontsize=14, color=reverse)
    ax.text(2.1, 1.55, "forward: fixed, adds noise", ha="center", va="bottom", fontsize=11, color=forward)
    ax.text(2.1, -1.55, "reverse: learned, removes noise", ha="center", va="top", fontsize=11, color=reverse)
    ax.text(0, -0.75, "data", ha="center", va="top", fontsize=10, color=GREY)
    ax.text(12, -0.75, r"$\approx\mathcal{N}(0, I)$", ha="center", va="top", fontsize=12, color=GREY)
    return fig


# --- 2. the residual block ----------------------------------------------------------------------

def resblock() -> Figure:
    """dh.ResBlock: GN₁ → SiLU → Conv₁ → GN₂ → ⊙(1 + a) + b → SiLU → Dropout → Conv₂, plus skip(x)."""
    fig, ax = canvas(6.2, (-3.9, 5.5), (0.35, 9.4))
    norm, act, conv, emb = COLORS["sky"], COLORS["yellow"], COLORS["orange"], COLORS["purple"]
    step = 0.82
    rows = [  # top to bottom: (text, colour or None for a plain label)
        (r"input $x$:  $C_\mathrm{in} \times H \times W$", None),
        (r"GroupNorm $\mathrm{GN}_1$ (8 groups)", norm),
        (r"SiLU", act),
        (r"$\mathrm{Conv}_1$ 3×3:  $C_\mathrm{in} \to C_\mathrm{out}$", conv),
        (r"GroupNorm $\mathrm{GN}_2$ (8 groups)", norm),
        (r"$\odot\,(1 + a) + b$", emb),
        (r"SiLU", act),
        (r"Dropout", GREY),
        (r"$\mathrm{Conv}_2$ 3×3:  $C_\mathrm{out} \to C_\mathrm{out}$", conv),
        (None, None),  # the sum
        (r"output:  $C_\mathrm{out} \times H \times W$", None),
    ]
    ys = [9.0 - i * step for i in range(len(rows))]
    for (text, color), y in zip(rows, ys):
        if text is None:
            operator(ax, 0, y, r"$+$")
        elif color is None:
            ax.text(0, y, text, ha="center", va="center", fontsize=11)
        else:
            box(ax, 0, y, text, color, width=3.5 if color != GREY else 1.6)
    for y1, y2 in zip(ys, ys[1:]):
        top = y1 - (0.2 if y1 == ys[9] else 0.23 if y1 != ys[0] else 0.17)
        bottom = y2 + (0.2 if y2 == ys[9] else 0.23 if y2 != ys[-1] else 0.17)
        arrow(ax, (0, top), (0, bottom))
    ax.text(0.55, (ys[3] + ys[4]) / 2, r"$h$", ha="left", va="center", fontsize=12)
    ax.text(0.55, (ys[5] + ys[6]) / 2, r"$h'$", ha="left", va="center", fontsize=12)
    # the embedding branch, on the right, into the modulation
    ex = 3.9
    ax.text(ex, ys[1], "embedding $e$\n(time, plus class)", ha="center", va="center", fontsize=10.5, linespacing=1.25)
    box(ax, ex, ys[2] - 0.1, "SiLU", act, width=1.5)
    box(ax, ex, ys[3] - 0.2, r"Linear $W_e, b_e$", emb, width=2.2)
    ax.text(ex, ys[4] - 0.25, r"$(a, b)$: two numbers" "\n" r"per output channel", ha="center", va="center", fontsize=10, linespacing=1.25)
    arrow(ax, (ex, ys[1] - 0.33), (ex, ys[2] - 0.1 + 0.23))
    arrow(ax, (ex, ys[2] - 0.1 - 0.23), (ex, ys[3] - 0.2 + 0.23))
    arrow(ax, (ex, ys[3] - 0.2 - 0.23), (ex, ys[4] - 0.25 + 0.3))
    arrow(ax, (ex, ys[4] - 0.25 - 0.32), (1.75, ys[5]), color=emb, rad=-0.25, width=1.6)
    # the skip, on the left
    sx = -2.7
    ax.plot([-1.3, sx, sx], [ys[0], ys[0], ys[9]], color=GREY, linewidth=1.3, zorder=1)
    arrow(ax, (sx, ys[9]), (-0.2, ys[9]), color=GREY)
    ax.text(sx - 0.15, (ys[0] + ys[9]) / 2, r"skip$(x)$:  identity if $C_\mathrm{in} = C_\mathrm{out}$, else a 1×1 conv",
            ha="right", va="center", rotation=90, fontsize=10, color=GREY)
    return fig


# --- 2b. the attention block --------------------------------------------------------------------

def attention() -> Figure:
    """dh.SelfAttention: GroupNorm → 1×1 conv to Q, K, V → per head softmax(QKᵀ/√d) V → W_O, plus x."""
    fig, ax = canvas(6.2, (-4.0, 5.3), (0.1, 8.0))
    norm, proj, attn = COLORS["sky"], COLORS["orange"], COLORS["green"]
    y_in, y_norm, y_qkv, y_a, y_head, y_out_proj, y_sum, y_out = 7.6, 6.8, 5.6, 4.45, 3.4, 2.3, 1.35, 0.45
    ax.text(0, y_in, r"input $x$:  $C \times H \times W$", ha="center", va="center", fontsize=11)
    box(ax, 0, y_norm, r"GroupNorm (8 groups):  $\hat x \in \mathbb{R}^{N \times C}$,  $N = H \cdot W$", norm, width=5.5)
    qkv_x = (-1.5, 0.0, 1.5)
    for x, name in zip(qkv_x, ("Q", "K", "V")):
        box(ax, x, y_qkv, rf"${name} = \hat x W_{name}$", proj, width=1.3)
        arrow(ax, (0, y_norm - 0.23), (x, y_qkv + 0.23), rad=0.0)
    box(ax, -0.75, y_a, r"$A = \mathrm{softmax}(Q K^\top / \sqrt{d})$", attn, width=2.9)
    arrow(ax, (-1.5, y_qkv - 0.23), (-1.2, y_a + 0.23))
    arrow(ax, (0, y_qkv - 0.23), (-0.3, y_a + 0.23))
    box(ax, 0.4, y_head, r"$\mathrm{head} = A V$", attn, width=2.0)
    arrow(ax, (-0.75, y_a - 0.23), (0.1, y_head + 0.23))
    arrow(ax, (1.5, y_qkv - 0.23), (0.9, y_head + 0.23))
    # the per-head frame
    ax.add_patch(FancyBboxPatch((-2.45, y_head - 0.5), 4.9, y_qkv - y_head + 1.0, boxstyle="round,pad=0,rounding_size=0.12",
                                facecolor="none", edgecolor=GREY, linewidth=1.0, linestyle=(0, (4, 3)), zorder=1))
    ax.text(2.55, y_qkv + 0.1, r"for each of $n = 4$ heads," "\n" r"$d = C/n$ channels each:" "\n" r"$Q, K, V \in \mathbb{R}^{N \times d}$,"
            "\n" r"$A \in \mathbb{R}^{N \times N}$", ha="left", va="top", fontsize=10, color=GREY, linespacing=1.35)
    ax.text(-1.0, (y_norm + y_qkv) / 2 + 0.05, "1×1 convs", ha="right", va="center", fontsize=10, color=GREY)
    box(ax, 0, y_out_proj, r"concatenate the heads, then $W_O$ (1×1 conv)", proj, width=4.6)
    arrow(ax, (0.4, y_head - 0.23), (0.4, y_out_proj + 0.23))
    operator(ax, 0, y_sum, r"$+$")
    arrow(ax, (0, y_out_proj - 0.23), (0, y_sum + 0.2))
    ax.text(0, y_out, r"output $x + \mathrm{heads}\,W_O$:  $C \times H \times W$", ha="center", va="center", fontsize=11)
    arrow(ax, (0, y_sum - 0.2), (0, y_out + 0.17))
    # the residual, on the left
    rx = -3.3
    ax.plot([-1.15, rx, rx], [y_in, y_in, y_sum], color=GREY, linewidth=1.3, zorder=1)
    arrow(ax, (rx, y_sum), (-0.2, y_sum), color=GREY)
    arrow(ax, (0, y_in - 0.17), (0, y_norm + 0.23))
    ax.text(rx - 0.15, (y_in + y_sum) / 2, "residual: the input itself", ha="right", va="center", rotation=90, fontsize=10, color=GREY)
    return fig


# --- 3. a DDIM step -----------------------------------------------------------------------------

def ddim_geometry() -> Figure:
    """The deterministic DDIM step x_t → x_t' in coordinates along x̂_0 and ε_θ: a move along the quarter circle."""
    fig, ax = canvas(5.6, (-0.42, 1.62), (-0.25, 1.3))
    t_color, s_color, path = COLORS["vermillion"], COLORS["blue"], GREY
    alpha_bar_t, alpha_bar_s = 0.25, 0.8  # a noisy x_t and a less noisy x_t' (any t' < t)
    angle_t, angle_s = math.acos(math.sqrt(alpha_bar_t)), math.acos(math.sqrt(alpha_bar_s))
    # the axes: the two directions
    arrow(ax, (0, 0), (1.0, 0), color=COLORS["black"], width=1.6)
    arrow(ax, (0, 0), (0, 1.0), color=COLORS["black"], width=1.6)
    ax.text(1.05, -0.01, r"$\hat x_0$", ha="left", va="center", fontsize=15)
    ax.text(-0.03, 1.0, r"$\varepsilon_\theta(x_t, t)$", ha="right", va="center", fontsize=14)
    # the path of the forward process from x̂_0 through x_t: the quarter circle, ᾱ from 1 to 0
    ax.add_patch(Arc((0, 0), 2, 2, theta1=0, theta2=90, color=path, linewidth=1.2, linestyle=(0, (5, 3)), zorder=1))
    ax.text(1.03, 0.1, r"$\bar\alpha = 1$", ha="left", va="bottom", fontsize=12, color=path)
    ax.text(0.04, 1.04, r"$\bar\alpha = 0$", ha="left", va="bottom", fontsize=12, color=path)
    # the two points, with their coordinates
    for angle, color, name in ((angle_t, t_color, "t"), (angle_s, s_color, "{t'}")):
        x, y = math.cos(angle), math.sin(angle)
        ax.plot([x, x], [0, y], color=color, linewidth=1.0, linestyle=(0, (2, 2)), zorder=1)
        ax.plot([0, x], [y, y], color=color, linewidth=1.0, linestyle=(0, (2, 2)), zorder=1)
        ax.plot([0, x], [0, y], color=color, linewidth=1.0, alpha=0.6, zorder=1)
        ax.add_patch(Circle((x, y), 0.025, color=color, zorder=4))
        ax.text(x, -0.03, rf"$\sqrt{{\bar\alpha_{name}}}$", ha="center", va="top", fontsize=12, color=color)
        ax.text(-0.03, y, rf"$\sqrt{{1-\bar\alpha_{name}}}$", ha="right", va="center", fontsize=12, color=color)
    xt, xs = (math.cos(angle_t), math.sin(angle_t)), (math.cos(angle_s), math.sin(angle_s))
    ax.text(xt[0] - 0.04, xt[1] + 0.04, r"$x_t$", ha="right", va="bottom", fontsize=15, color=t_color)
    ax.text(xs[0] - 0.07, xs[1] + 0.04, r"$x_{t'}$", ha="right", va="bottom", fontsize=15, color=s_color)
    # the step itself, along the arc, just outside it
    r = 1.1
    ax.add_patch(Arc((0, 0), 2 * r, 2 * r, theta1=math.degrees(angle_s) + 3, theta2=math.degrees(angle_t) - 2, color=s_color, linewidth=2.2, zorder=3))
    tip = angle_s + 0.03
    arrow(ax, (r * math.cos(tip + 0.05), r * math.sin(tip + 0.05)), (r * math.cos(tip), r * math.sin(tip)), color=s_color, width=2.2)
    mid = (angle_s + angle_t) / 2
    ax.text(1.16 * math.cos(mid), 1.16 * math.sin(mid), "DDIM step\n" r"($\eta = 0$)", ha="left", va="bottom", fontsize=11, color=s_color, linespacing=1.2)
    ax.text(-0.4, 1.28, r"$x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}}\,\varepsilon_\theta(x_t, t)$", ha="left", va="top", fontsize=13)
    return fig


# --- 4. classifier-free guidance ----------------------------------------------------------------

def guidance_geometry() -> Figure:
    """ε̃ = ε_θ(x_t, t, ∅) + s (ε_θ(x_t, t, y) − ε_θ(x_t, t, ∅)): a point on the line through the two predictions."""
    fig, ax = canvas(6.4, (-0.3, 7.1), (-0.35, 4.3))
    uncond, cond, guided = COLORS["orange"], COLORS["blue"], COLORS["vermillion"]
    e_null, e_y = (3.0, 0.3), (3.42, 1.3)
    direction = (e_y[0] - e_null[0], e_y[1] - e_null[1])
    at = lambda s: (e_null[0] + s * direction[0], e_null[1] + s * direction[1])  # noqa: E731
    s_guided = 3
    # the line of all scales
    start, end = at(-0.35), at(s_guided + 0.45)
    ax.plot([start[0], end[0]], [start[1], end[1]], color=GREY, linewidth=1.0, linestyle=(0, (4, 3)), zorder=1)
    # the three vectors from the origin
    ax.add_patch(Circle((0, 0), 0.05, color=COLORS["black"], zorder=4))
    ax.text(-0.08, -0.08, r"$0$", ha="right", va="top", fontsize=12)
    arrow(ax, (0, 0), e_null, color=uncond, width=2.0, zorder=3)
    arrow(ax, (0, 0), e_y, color=cond, width=2.0, zorder=3)
    arrow(ax, (0, 0), at(s_guided), color=guided, width=2.4, zorder=3)
    # the difference, then its multiples
    arrow(ax, e_null, e_y, color=COLORS["black"], width=1.6, zorder=3)
    for k in range(1, s_guided):
        arrow(ax, at(k), at(k + 1), color=COLORS["black"], width=1.0, zorder=2, dashed=True)
    labels = {0: (r"$s = 0$:  $\varepsilon_\theta(x_t, t, \varnothing)$", uncond), 1: (r"$s = 1$:  $\varepsilon_\theta(x_t, t, y)$", cond),
              2: (r"$s = 2$", COLORS["black"]), 3: (r"$s = 3$:  $\tilde\varepsilon$", guided)}
    for s, (text, color) in labels.items():
        p = at(s)
        ax.add_patch(Circle(p, 0.05, color=COLORS["black"], zorder=5))
        ax.text(p[0] + 0.18, p[1] - 0.02, text, ha="left", va="center", fontsize=13, color=color)
    ax.text(at(0.5)[0] + 0.22, at(0.5)[1] - 0.02, r"$+\left(\varepsilon_\theta(x_t, t, y) - \varepsilon_\theta(x_t, t, \varnothing)\right)$ per unit of $s$",
            ha="left", va="center", fontsize=10.5, color=GREY)
    ax.text(-0.25, 4.25, r"$\tilde\varepsilon = \varepsilon_\theta(x_t, t, \varnothing) + s\,\left(\varepsilon_\theta(x_t, t, y) - \varepsilon_\theta(x_t, t, \varnothing)\right)$",
            ha="left", va="top", fontsize=13)
    ax.text(-0.25, 3.65, r"$0 < s < 1$: between the two predictions" "\n" r"$s > 1$: beyond the conditional one",
            ha="left", va="top", fontsize=11, color=GREY, linespacing=1.5)
    return fig


SCHEMATICS = {
    "chain.svg": chain,
    "resblock.svg": resblock,
    "attention.svg": attention,
    "ddim_geometry.svg": ddim_geometry,
    "guidance_geometry.svg": guidance_geometry,
}


def write_all(out: Path) -> list[Path]:
    """Draw every schematic into ``out`` (created if needed); returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with matplotlib.rc_context(STYLE):
        for name, draw in SCHEMATICS.items():
            fig = draw()
            path = out / name
            fig.savefig(path, format="svg", metadata=METADATA, facecolor="white")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=FIGURES, help="folder to write the SVG files into (default: book/figures)")
    args = parser.parse_args(argv)
    for path in write_all(args.out):
        print(f"{path}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
