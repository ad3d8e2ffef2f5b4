"""Where a chapter's stored outputs came from, recorded by the chapter itself in its last cell.

:func:`record` returns a :class:`Provenance`: the mode, a hash of the configuration fields the
chapter uses, the package version, the git commit (and whether the working tree had changes),
the device, the date, the wall time since the package was imported (the chapter's run time) and
the numbers the chapter states (``results``), and for a chapter that trains a shipped model the
identity of the weights it wrote (``trained``: name -> :func:`weights_identity`). Displayed in a
notebook it prints one line and stores the whole record as JSON in the cell's output, under
:data:`MIME_TYPE`, so the notebook file carries it. ``tests/test_provenance.py`` reads it back: a
chapter whose outputs come from tiny mode, carry no record, or were made with other values of the
fields it uses is stale; a shipped model whose weights are not the ones its chapter's stored run
trained fails; and ``scripts/make_manifest.py`` gathers every chapter's results into ``results.json``.
Taught in: every chapter's last cell.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ._version import __version__
from .cards import read_card
from .weights import sha256_of

MIME_TYPE = "application/vnd.ddpm-helpers.provenance+json"
_IMPORTED = time.monotonic()
_REPOSITORY = Path(__file__).resolve().parents[1]


# Fields added to a config component after chapters were stored, each with the value that does what the
# code did before the field existed. A field at that value is left out of the hash, so adding a field
# does not make every stored run stale; any other value (a changed default, an override) is hashed and does.
ADDED_FIELDS: dict[tuple[str, str], object] = {
    ("train", "timestep_sampling"): "uniform",  # t ~ U{0, ..., T-1}: torch.randint, as before the field
    ("train", "timestep_logit_mean"): 0.0,  # read only by timestep_sampling="logit_normal"
    ("train", "timestep_logit_std"): 1.0,
    ("data", "dataset"): "mnist",  # every run before the field read MNIST
    ("judge", "max_noise"): None,  # the judge starts at T-1, as before the field
}


def config_hash(cfg, uses: Iterable[str]) -> str:
    """A short SHA-256 of the configuration fields ``uses`` (names of ``cfg``'s fields, e.g.
    ``("data", "diffusion")``): outputs made with other values of these fields are stale.
    A field of :data:`ADDED_FIELDS` at its recorded value is not part of the hash."""
    values = cfg.to_dict()
    uses = sorted(set(uses))
    unknown = [name for name in uses if name not in values]
    if unknown:
        raise ValueError(f"uses must name fields of the config {sorted(values)}, got unknown {unknown}")
    for (component, field), before in ADDED_FIELDS.items():
        if isinstance(values.get(component), dict) and values[component].get(field, before) == before:
            values[component].pop(field, None)
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
    trained: dict[str, str] = field(default_factory=dict)  # shipped model's name -> weights_identity of the file the run wrote

    def summary(self) -> str:
        commit = "no git checkout" if self.commit is None else self.commit[:10] + (" + uncommitted changes" if self.uncommitted_changes else "")
        trained = "".join(f"; trained {name} (sha256 {sha256[:12]}...)" for name, sha256 in self.trained.items())
        return (f"{self.chapter}: {self.mode} mode, ran in {self.wall_seconds / 60:.1f} min on {self.device}, {self.date}; "
                f"ddpm_helpers {self.package_version} ({commit}), config {self.config_hash} of {', '.join(self.uses)}{trained}")

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return {"text/plain": self.summary(), MIME_TYPE: asdict(self)}


def check_json_value(value: object, path: str) -> None:
    """``value`` must be strict JSON, as the notebook file and ``results.json`` store it: None, a bool,
    an int, a *finite* float (JSON has no NaN or infinity), a string, or lists/tuples and dicts with
    string keys of these. ``path`` names the value in the message, e.g. ``results['fid'][0]``."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path} must be a finite number (strict JSON has no NaN or infinity), got {value!r}: "
                             f"fix the computation, or record None where there is no number")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json_value(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path} must have string keys (JSON's keys are strings), got the {type(key).__name__} key {key!r}")
            check_json_value(item, f"{path}[{key!r}]")
        return
    raise ValueError(f"{path.split('[')[0]} must hold JSON values (numbers, strings, booleans, None, lists, dicts), "
                     f"but {path} is a {type(value).__name__}, {repr(value)[:60]}: convert it, e.g. with float(x) or x.item()")


def _identity(weights: object, what: str) -> str:
    if isinstance(weights, bool) or not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"{what} must be the path of a model's .pt file (a str or Path), got {type(weights).__name__} {weights!r}")
    path = Path(weights)
    if path.suffix != ".pt":
        raise ValueError(f"{what} must be a model's .pt file, as dh.save_pretrained writes it (<name>.pt beside <name>.json), got {str(path)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no weights file at {path}")
    card = read_card(path.with_suffix(".json"), f"{what} ({path.name})")
    if card.name != path.stem:
        raise ValueError(f"{what}: the card beside {path.name} names the model {card.name!r}, not {path.stem!r}; save it with dh.save_pretrained")
    sha256 = sha256_of(path)
    if sha256 != card.sha256:
        raise ValueError(f"{what}: {path.name} has SHA-256 {sha256[:12]}... but its card records {card.sha256[:12]}...; "
                         f"the weights were replaced or damaged after dh.save_pretrained wrote them")
    return sha256


def weights_identity(weights: str | os.PathLike) -> str:
    """The identity of a model's weights that publishing preserves: the SHA-256 of its ``<name>.pt``.

    ``weights``: a ``.pt`` file written by :func:`~ddpm_helpers.pretrained.save_pretrained`, e.g. the
    one a chapter wrote into its run folder, or a shipped ``dh.WEIGHTS_DIR / "<name>.pt"``. The card
    beside it (``<name>.json``) must name the model ``<name>`` and record this very SHA-256 (else a
    ValueError; a missing file or card is a FileNotFoundError). ``scripts/publish_weights.py`` copies
    both files byte for byte and refuses a copy whose SHA-256 is not the card's, so a published model
    has the identity of the file its chapter wrote. :func:`record` (``trained=``) and
    ``tests/test_provenance.py`` (on the shipped models) both compute it here.
    """
    return _identity(weights, "weights")


def _trained_identities(trained: object) -> dict[str, str]:
    if trained is None:
        return {}
    if not isinstance(trained, Mapping):
        raise ValueError(f"trained must map each shipped model's name to the .pt file the chapter wrote, "
                         f"e.g. {{'unconditional': weights_path}}, got {type(trained).__name__} {trained!r}")
    identities = {}
    for name, weights in trained.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"trained's keys must be the shipped models' names as non-empty strings, got {name!r}")
        if isinstance(weights, (str, os.PathLike)) and not isinstance(weights, bool) and Path(weights).stem != name:
            raise ValueError(f"trained[{name!r}] must be the weights of {name!r} ({name}.pt, as dh.save_pretrained names them), got {str(weights)!r}")
        identities[name] = _identity(weights, f"trained[{name!r}]")
    return dict(sorted(identities.items()))


def record(chapter: str, cfg, device: str, *, uses: Iterable[str], results: dict | None = None,
           trained: Mapping[str, str | os.PathLike] | None = None) -> Provenance:
    """The provenance of this chapter's run, to be the value of its last cell.

    ``device``: a string describing the device (``dh.describe_device(device)``). ``uses``: the
    configuration fields whose values the chapter's outputs depend on. ``results``: the numbers the
    chapter states, each a plain value or a dict with its context (n, seed, ...), in strict JSON
    (finite numbers, string keys; see :func:`check_json_value`): they are stored in the notebook
    and go into the book's ``results.json``. The run time counts from the package's import.

    ``trained``: for a chapter that trains a model the package ships, each such model's name mapped
    to the ``.pt`` file the chapter wrote with ``dh.save_pretrained``; the record stores its
    :func:`weights_identity` (the file's SHA-256, which publishing preserves), and
    ``tests/test_provenance.py`` fails while the package ships other weights under that name. The
    training chapter's last cell, for instance::

        dh.provenance.record("04_training", cfg, device_name, uses=(...), results={...},
                             trained={"unconditional": weights_path})
    """
    if not isinstance(chapter, str) or not chapter:
        raise ValueError(f"chapter must be the chapter's name as a non-empty string, got {chapter!r}")
    if not isinstance(device, str):
        raise ValueError(f"device must be a string describing the device, e.g. dh.describe_device(device), got {type(device).__name__} {device!r}")
    if results is not None and not isinstance(results, dict):
        raise ValueError(f"results must be a dict of the chapter's numbers, got {type(results).__name__}")
    results = dict(results or {})
    check_json_value(results, "results")
    names = list(uses) if isinstance(uses, Iterable) and not isinstance(uses, str) else None
    if names is None or not all(isinstance(name, str) for name in names):
        raise ValueError(f"uses must be a collection of config field names, e.g. ('data', 'diffusion'), got {uses!r}")
    uses = sorted(set(names))
    identities = _trained_identities(trained)
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
        trained=identities,
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
