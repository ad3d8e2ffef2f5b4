"""Where a chapter's stored outputs came from, recorded by the chapter itself in its last cell.

:func:`record` returns a :class:`Provenance`: the mode, a hash of the configuration fields the
chapter uses, the package version, the git commit (and whether the working tree had changes),
the device, the date, the wall time since the package was imported (the chapter's run time) and
the numbers the chapter states (``results``). Displayed in a notebook it prints one line and stores
the whole record as JSON in the cell's output, under :data:`MIME_TYPE`, so the notebook file
carries it. ``tests/test_provenance.py`` reads it back: a chapter whose outputs come from tiny
mode, carry no record, or were made with other values of the fields it uses is stale, and
``scripts/make_manifest.py`` gathers every chapter's results into ``results.json``.
Taught in: every chapter's last cell.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path


MIME_TYPE = "application/vnd.ddpm-helpers.provenance+json"
_IMPORTED = time.monotonic()
_REPOSITORY = Path(__file__).resolve().parents[1]


def config_hash(cfg, uses: Iterable[str]) -> str:
    """A short SHA-256 of the configuration fields ``uses`` (names of ``cfg``'s fields, e.g.
    ``("data", "diffusion")``): outputs made with other values of these fields are stale."""
    values = cfg.to_dict()
    uses = sorted(set(uses))
    unknown = [name for name in uses if name not in values]
    if unknown:
        raise ValueError(f"uses must name fields of the config {sorted(values)}, got unknown {unknown}")
    text = json.dumps({name: values[name] for name in uses}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=_REPOSITORY, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@dataclass(frozen=True)
class Provenance:
    """One chapter run: what produced the outputs stored beside it."""

    chapter: str
    mode: str
    uses: list[str]
    config_hash: str
    package_version: str
    commit: str | None  # None where the package is not a git checkout (e.g. installed from a wheel)
    uncommitted_changes: bool | None  # in the package's code (ddpm_helpers/) at run time; the chapter's own code is stored with it
    device: str
    date: str
    wall_seconds: float
    results: dict = field(default_factory=dict)

    def summary(self) -> str:
        commit = "no git checkout" if self.commit is None else self.commit[:10] + (" + uncommitted changes" if self.uncommitted_changes else "")
        return (f"{self.chapter}: {self.mode} mode, ran in {self.wall_seconds / 60:.1f} min on {self.device}, {self.date}; "
                f"ddpm_helpers {self.package_version} ({commit}), config {self.config_hash} of {', '.join(self.uses)}")

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return {"text/plain": self.summary(), MIME_TYPE: asdict(self)}


def record(chapter: str, cfg, device: str, *, uses: Iterable[str], results: dict | None = None) -> Provenance:
    """The provenance of this chapter's run, to be the value of its last cell.

    ``uses``: the configuration fields whose values the chapter's outputs depend on. ``results``:
    the numbers the chapter states, each a plain value or a dict with its context (n, seed, ...);
    they go into the book's ``results.json``. The run time counts from the package's import.
    """
    from . import __version__

    results = dict(results or {})
    try:
        json.dumps(results)
    except TypeError as error:
        raise ValueError(f"results must hold JSON values (numbers, strings, lists, dicts), got {error}") from error
    uses = sorted(set(uses))
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no", "--", "ddpm_helpers") if commit else None
    return Provenance(
        chapter=chapter,
        mode=cfg.mode,
        uses=uses,
        config_hash=config_hash(cfg, uses),
        package_version=__version__,
        commit=commit,
        uncommitted_changes=None if status is None else bool(status),
        device=device,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        wall_seconds=round(time.monotonic() - _IMPORTED, 1),
        results=results,
    )


def read_notebook(path: str | Path) -> dict | None:
    """The provenance stored in the notebook at ``path`` (the last record if several), or None."""
    notebook = json.loads(Path(path).read_text())
    found = None
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data", {})
            if MIME_TYPE in data:
                found = data[MIME_TYPE]
    return found
