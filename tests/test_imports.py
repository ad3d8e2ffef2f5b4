"""The layers the package describes (issue 25, item 5): read from the source with ``ast``, every
import between the package's modules (also one inside a function) goes down the floors below or
stays on its own floor, no imports form a circle, and every module is at most 300 lines.

A module may import from its own floor and the floors below it, never from a floor above. A new
module must be given a floor here: that is the moment to decide what it may depend on.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ddpm_helpers"
MAX_LINES = 300

# Bottom to top.
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations: checks, files, devices, plain helpers", ("_version", "checks", "weights", "runtime", "claims", "interactive", "layers")),
    ("what is diffused: schedules (DiffusionConfig), data spaces, data (DataConfig), EMA", ("schedules", "spaces", "image_range", "data", "ema")),
    ("the process: forward, posterior, loss; exact answers", ("diffusion", "oracles")),
    ("the reverse process: steps, the timesteps visited, sampling, the bound, the checks of both", ("steps", "spacings", "samplers", "elbo", "checklist", "diagnostics")),
    ("networks and what judges images", ("unet", "autoencoder", "latent", "metrics", "viz", "toy2d")),
    ("training: TrainConfig and TrainState, checkpoints, flows and their samplers, a step's draws and checks, the loop",
     ("train_state", "checkpoint", "flow", "flow_sampling", "train_inputs", "training")),
    ("gathered settings and model cards", ("config", "cards", "classifier", "evaluation")),
    ("shipped models by name, records, the package's face", ("pretrained", "generate", "provenance", "__main__", "__init__")),
]
FLOOR = {module: level for level, (_, modules) in enumerate(FLOORS) for module in modules}
SPLIT_IN_PROGRESS: dict[str, str] = {}  # module -> why it may still be over MAX_LINES


def modules() -> list[str]:
    return sorted(path.stem for path in PACKAGE.glob("*.py"))


def imports_of(module: str) -> set[str]:
    """The package modules that ``module`` imports, anywhere in its source (``from . import x``,
    ``from .x import y``, ``import ddpm_helpers.x``; the package itself is ``__init__``)."""
    names = set(modules())
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.module or "").split(".")[0] == "ddpm_helpers":
                parts = (node.module or "").split(".")[(0 if node.level == 1 else 1):]
                if parts and parts[0]:
                    found.add(parts[0])
                else:  # from . import x: a submodule, or a name of the package itself
                    found |= {alias.name if alias.name in names else "__init__" for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "ddpm_helpers":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
    return found - {module}


def test_every_module_has_a_floor():
    missing = [m for m in modules() if m not in FLOOR]
    assert not missing, f"give these modules a floor in tests/test_imports.py FLOORS: {missing}"


def test_no_import_goes_up_a_floor():
    upward = [f"{m} (floor {FLOOR[m]}) imports {d} (floor {FLOOR[d]})" for m in modules() if m in FLOOR
              for d in sorted(imports_of(m)) if d in FLOOR and FLOOR[d] > FLOOR[m]]
    assert not upward, "imports from a lower floor to a higher one:\n" + "\n".join(upward)


def test_no_import_circle():
    graph = {m: imports_of(m) for m in modules()}
    state: dict[str, str] = {}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                circles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles: " + "; ".join(circles)


def test_the_checkpoint_serialises_the_state_and_the_loop_sits_above_it():
    """The circle issue 25 names: checkpoint and training imported each other (one import hidden in a function)."""
    assert "training" not in imports_of("checkpoint") and "checkpoint" in imports_of("training")
    assert not {"training", "checkpoint"} & imports_of("train_state")


@pytest.mark.parametrize("module", modules())
def test_every_module_is_at_most_300_lines(module):
    lines = len((PACKAGE / f"{module}.py").read_text().splitlines())
    if lines > MAX_LINES and module in SPLIT_IN_PROGRESS:
        pytest.skip(SPLIT_IN_PROGRESS[module])
    assert lines <= MAX_LINES, f"{module}.py has {lines} lines; split it by idea (at most {MAX_LINES})"


def test_the_version_is_the_projects():
    from ddpm_helpers import __version__

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    assert __version__ == project["version"]
