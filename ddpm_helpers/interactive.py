"""Figures a reader can move without a kernel: precomputed frames and a slider in plain HTML.

A :class:`FrameSlider` holds a list of pictures (PNG bytes, one per slider position) and their
labels. In a notebook it displays as HTML with a few lines of self-contained JavaScript, so the
same output works in Jupyter, on Colab and in the static pages of the rendered book, where no
Python runs behind the page (ipywidgets render blank there). It refers to nothing outside itself:
no CDN, no external URL, every frame inlined as a data URI, under a size budget.
With a kernel, :meth:`FrameSlider.widget` shows the same frames with ipywidgets.
Taught in: 01_forward_process.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

DEFAULT_MAX_BYTES = 2_000_000  # the page budget of the rendered book: about 2 MB per page
_ids = itertools.count()
# Characters that may not appear as themselves in data inside an inline <script>: "<" could close the
# element ("</script>") or open a comment ("<!--"), ">" and "&" are escaped too for safety, and
# U+2028/U+2029 end a string literal in older JavaScript engines. In JSON strings each may be written
# as a \uXXXX escape, which JavaScript reads back as the same character.
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(value: object) -> str:
    """``value`` as JSON that is safe to write inside an HTML ``<script>`` element.

    ``json.dumps`` alone is not: a string holding ``</script>`` would end the script and turn the
    rest into markup. Here ``<``, ``>``, ``&``, U+2028 and U+2029 become ``\\uXXXX`` escapes, which
    can only occur inside JSON strings and which JavaScript decodes to the same characters, so
    ``JSON.parse`` (or a script reading the literal) sees exactly ``value``. Text without those
    characters is written exactly as ``json.dumps`` writes it.
    """
    text = json.dumps(value)
    for character, escape in _SCRIPT_ESCAPES.items():
        text = text.replace(character, escape)
    return text


def figure_png(fig: Figure, *, dpi: int = 72) -> bytes:
    """``fig`` as PNG bytes; the figure is closed (frames are drawn by the dozen)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


@dataclass(frozen=True, repr=False)
class FrameSlider:
    """Pictures behind a slider: ``frames[i]`` (PNG bytes) is shown with ``labels[i]``.

    ``title`` heads the figure; ``start`` is the frame shown first. Displaying it in a notebook
    gives the kernel-free HTML (:meth:`to_html`).
    """

    frames: tuple[bytes, ...]
    labels: tuple[str, ...]
    title: str = ""
    start: int = 0
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if not isinstance(self.title, str):
            raise ValueError(f"title must be a string, got {type(self.title).__name__} {self.title!r}")
        for i, label in enumerate(self.labels):
            if not isinstance(label, str):
                raise ValueError(f"labels must be strings (e.g. f'{{value:g}}'), got {type(label).__name__} {label!r} at labels[{i}]")
        if len(self.frames) < 2:
            raise ValueError(f"frames must hold at least 2 pictures for a slider, got {len(self.frames)}")
        if len(self.labels) != len(self.frames):
            raise ValueError(f"labels must give one label per frame: {len(self.frames)} frames, {len(self.labels)} labels")
        if not all(isinstance(f, bytes) and f.startswith(b"\x89PNG") for f in self.frames):
            raise ValueError("frames must be PNG bytes (see figure_png)")
        if not 0 <= self.start < len(self.frames):
            raise ValueError(f"start must index a frame, in [0, {len(self.frames) - 1}], got {self.start}")
        if self.size_bytes > self.max_bytes:
            raise ValueError(
                f"the slider's HTML would be {self.size_bytes / 1e6:.2f} MB, over its budget of max_bytes={self.max_bytes / 1e6:.2f} MB; "
                f"use fewer frames, a lower dpi or smaller figures"
            )

    def __repr__(self) -> str:
        """A short text for notebooks' ``text/plain`` fallback (the default would print every frame's bytes)."""
        return f"<FrameSlider: {len(self.frames)} frames of {self.title!r}, labels {self.labels[0]!r} to {self.labels[-1]!r}>"

    @property
    def size_bytes(self) -> int:
        """The size of :meth:`to_html`, in bytes (what the page grows by)."""
        return len(self.to_html().encode())

    def to_html(self) -> str:
        """The figure as one self-contained HTML fragment (a div, an image, a range input, a script).

        Text (title, labels) is escaped with ``html.escape``; data inside the script is written by
        :func:`script_json`, so no label or title can add markup or end the script.
        """
        uid = f"dh-frames-{next(_ids)}-{abs(hash(self.frames)) % 10**8}"
        sources = [f"data:image/png;base64,{base64.b64encode(frame).decode()}" for frame in self.frames]
        title = f'<div class="dh-title" style="font-weight:600;margin-bottom:4px">{html.escape(self.title)}</div>' if self.title else ""
        return (
            f'<div class="dh-frames" id="{uid}" style="max-width:100%">{title}'
            f'<input type="range" min="0" max="{len(sources) - 1}" step="1" value="{self.start}" '
            f'aria-label="{html.escape(self.title or "frame")}" style="width:min(420px,100%);vertical-align:middle">'
            f' <span class="dh-label" style="font-family:monospace;margin-left:8px">{html.escape(self.labels[self.start])}</span><br>'
            f'<img class="dh-frame" src="{sources[self.start]}" alt="{html.escape(self.labels[self.start])}" style="max-width:100%;height:auto">'
            f"<script>(function(){{var root=document.getElementById({script_json(uid)});"
            f"var frames={script_json(sources)};var labels={script_json(list(self.labels))};"
            "var input=root.querySelector('input'),img=root.querySelector('img.dh-frame'),label=root.querySelector('.dh-label');"
            "function show(){var i=parseInt(input.value,10);img.src=frames[i];img.alt=labels[i];label.textContent=labels[i];}"
            "input.addEventListener('input',show);input.addEventListener('change',show);})();</script></div>"
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def widget(self):
        """The same frames driven by ipywidgets (needs a kernel: Jupyter or Colab)."""
        import ipywidgets as widgets

        image = widgets.Image(value=self.frames[self.start], format="png")
        slider = widgets.SelectionSlider(options=list(zip(self.labels, range(len(self.labels)))), value=self.start, description="")

        def show(change) -> None:
            image.value = self.frames[change["new"]]

        slider.observe(show, names="value")
        return widgets.VBox([widgets.HTML(html.escape(self.title)), slider, image])


def frame_slider(
    draw: Callable[[object], Figure],
    values: Iterable[object],
    labels: Sequence[str] | None = None,
    *,
    title: str = "",
    start: int = 0,
    dpi: int = 72,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FrameSlider:
    """Draw one matplotlib figure per value (``draw(value)`` returns it) and put them behind a slider.

    ``labels`` default to ``str(value)``; given, they must be strings. Each figure is rendered at
    ``dpi`` and closed. Labels and title are shown as text: any characters are safe (see :meth:`FrameSlider.to_html`).
    """
    values = list(values)
    frames = tuple(figure_png(draw(value), dpi=dpi) for value in values)
    return FrameSlider(frames, tuple(labels) if labels is not None else tuple(str(v) for v in values), title=title, start=start, max_bytes=max_bytes)
