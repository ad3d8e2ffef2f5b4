"""Numbers and comparisons in a chapter's prose, computed by the run that the chapter shows.

Prose typed after a run drifts from the next run. So a chapter states its results in two ways only:

* **A glued number.** The code cell that computes a number hands it to :meth:`Prose.number`, which
  formats it and *glues* it into the notebook (the output format of MyST-NB's ``glue``, written
  here without importing MyST-NB, so the package needs nothing beyond Jupyter on Colab). The
  markdown cell writes ``{glue:text}`name``` where the number goes; the book shows the stored value,
  and a re-run updates the sentence.
* **A checked claim.** A sentence that compares ("better", "within the spread", "passes the bar")
  rests on :meth:`Prose.claim` in the cell before it: the relation, computed from the run's own
  numbers, with the sentence's text. In a full run a false claim stops the chapter with that text
  (:class:`FalseClaim`); in tiny mode, where the numbers mean nothing, claims are recorded and not
  enforced.

Both go into the chapter's provenance record (``dh.provenance.record(..., results=prose.results())``),
so ``results.json`` holds every number the prose states and every claim with its verdict.
Taught in: every chapter (the convention), first used in the measuring-quality page.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field

GLUE_MIME_PREFIX = "application/papermill.record/"  # MyST-NB's key prefix for glued values that are not displayed
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


class FalseClaim(RuntimeError):
    """A chapter states a comparison that its own run does not support."""


@dataclass(frozen=True)
class Claim:
    """One comparison the prose makes, and whether this run supports it."""

    text: str
    holds: bool
    evidence: dict


@dataclass
class Prose:
    """The glued numbers and checked claims of one chapter run.

    ``enforce``: whether a false claim stops the run; chapters pass ``cfg.mode == "full"`` (tiny
    mode checks that the claims are computed, not what they say).
    """

    enforce: bool
    numbers: dict = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)

    def number(self, name: str, value: float | int | str, fmt: str = "") -> None:
        """Format ``value`` with ``fmt`` (a format spec, e.g. ``".2f"``, ``",d"``, ``".1%"``), glue the
        text under ``name`` for the prose's ``{glue:text}`name``` and record it (:meth:`text` reads it back).

        Nothing is returned, so a call on a cell's last line adds no output. A name is glued once per
        run (a second use would make the prose ambiguous)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"name must be letters, digits, '_', '.' or '-', starting with a letter, got {name!r}")
        if name in self.numbers:
            raise ValueError(f"name {name!r} is already glued in this chapter (as {self.numbers[name]['text']!r}); give each number its own name")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"value of {name!r} must be a number or a string, got {type(value).__name__} (convert tensors with float() or int())")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"value of {name!r} must be finite, got {value}; a non-finite result is a failed run, not a number to print")
        try:
            text = format(value, fmt)
        except (ValueError, TypeError) as error:
            raise ValueError(f"fmt {fmt!r} cannot format the value {value!r} of {name!r}: {error}") from error
        self.numbers[name] = {"value": value, "text": text}
        glue(name, text)

    def text(self, name: str) -> str:
        """The text glued under ``name``, as the prose shows it."""
        if name not in self.numbers:
            raise KeyError(f"no number is glued under {name!r}; glued so far: {sorted(self.numbers)}")
        return self.numbers[name]["text"]

    def claim(self, text: str, holds: object, **evidence: float | int | str | None) -> None:
        """Record the comparison ``text`` and whether it ``holds`` (a bool computed from the run's numbers,
        given as ``evidence``, where None marks a number this run did not measure); in an enforced run a false claim raises :class:`FalseClaim` with the text.
        Nothing is returned (a call on a cell's last line adds no output); :meth:`results` holds the verdicts."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text must be the sentence the claim supports, got {text!r}")
        if not isinstance(holds, bool):
            holds_type = type(holds).__name__
            raise ValueError(f"holds must be a bool computed from the run (e.g. fid_new < fid_old), got a {holds_type}; convert a tensor with bool(...)")
        try:
            json.dumps(evidence, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"evidence of the claim {text!r} must be finite JSON values (numbers, strings or None), got {error}") from error
        self.claims.append(Claim(text, holds, dict(evidence)))
        if not holds and self.enforce:
            raise FalseClaim(f"the run does not support the claim {text!r} (evidence: {evidence}); change the prose or find out why the numbers moved")

    def results(self) -> dict:
        """The numbers and claims, for the ``results`` of ``dh.provenance.record``."""
        return {"numbers": {name: item["value"] for name, item in self.numbers.items()},
                "claims": [asdict(claim) for claim in self.claims]}


def prose_for(cfg) -> Prose:
    """The :class:`Prose` of a chapter run: claims enforced in full mode, recorded in tiny mode."""
    return Prose(enforce=cfg.mode == "full")


def glue(name: str, text: str) -> None:
    """Store ``text`` under ``name`` in the running notebook's outputs, in the form MyST-NB's glue
    roles read (a display_data output whose metadata names it), without showing it. Outside a
    Jupyter kernel (a script, a test) it does nothing."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is None:
        return
    display({GLUE_MIME_PREFIX + "text/plain": repr(text)}, raw=True, metadata={"scrapbook": {"name": name, "mime_prefix": GLUE_MIME_PREFIX}})


_GLUE_ROLE = re.compile(r"\{glue(?::[a-z]+)?\}`[^`]*`")
_SKIP = [
    re.compile(r"\$\$.*?\$\$", re.S),  # display maths: symbols and the paper's constants
    re.compile(r"\$[^$\n]*\$"),  # inline maths
    re.compile(r"```.*?```", re.S),  # code blocks
    re.compile(r"`[^`\n]*`"),  # code spans, roles' targets
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"\{cite[a-z:]*\}`[^`]*`"),
]
# What a result looks like in prose: a decimal (1.45, 0.9889), a percentage (89.3%), or a count with
# a thousands separator (11,823). Plain small integers (T = 1000, 32×32, chapter 4) are left alone.
RESULT_LIKE = re.compile(r"(?<![\w.])(?:\d+(?:\.\d+)?%|\d+\.\d+|\d{1,3}(?:,\d{3})+)(?![\w.]\d)")


def typed_numbers(markdown: str, allowed: frozenset[str] = frozenset()) -> list[str]:
    """The numbers in ``markdown`` that look like results (decimals, percentages, counts such as
    11,823) and are neither glued, inside maths, code or link targets, nor in ``allowed``."""
    text = _GLUE_ROLE.sub(" ", markdown)
    for pattern in _SKIP:
        text = pattern.sub(" ", text)
    return [match for match in RESULT_LIKE.findall(text) if match not in allowed]
