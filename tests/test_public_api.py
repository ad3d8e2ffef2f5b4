"""The package's public face: one rule for what is flat under ``dh.`` and what lives in a submodule,
and the chapters follow it (they call nothing internal)."""

import ast
import json
from pathlib import Path

import pytest

import ddpm_helpers as dh

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def public_names(module) -> set[str]:
    """A submodule's public names: what it defines without a leading underscore."""
    return {name for name in vars(module) if not name.startswith("_")}


def dh_attribute_chains(source: str) -> list[tuple[str, ...]]:
    """Every ``dh.a`` or ``dh.a.b`` in the code, as ("a",) or ("a", "b")."""
    chains = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "dh":
            chains.append((node.attr,))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and isinstance(node.value.value, ast.Name) and node.value.value.id == "dh":
            chains.append((node.value.attr, node.attr))
    return chains


def code_of(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] == "code":
            lines += [line for line in "".join(cell["source"]).splitlines() if not line.lstrip().startswith(("!", "%"))]
    return "\n".join(lines)


def test_all_is_sorted_names_that_exist_and_submodules_are_separate():
    assert dh.__all__ == sorted(dh.__all__) and len(set(dh.__all__)) == len(dh.__all__)
    assert all(hasattr(dh, name) for name in dh.__all__)
    assert not set(dh.__all__) & set(dh.SUBMODULES)  # modules are not mixed into the names
    for name in dh.SUBMODULES:
        assert type(getattr(dh, name)).__name__ == "module"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapters_use_only_the_stated_public_api(notebook):
    stray = []
    for chain in dh_attribute_chains(code_of(notebook)):
        head = chain[0]
        if head in dh.SUBMODULES:
            if len(chain) == 2 and chain[1] not in public_names(getattr(dh, head)):
                stray.append(".".join(chain))
        elif head not in dh.__all__ and head != "__version__":
            stray.append(head)
    assert not stray, f"{notebook.name} reaches past the public API: {sorted(set(stray))}"


@pytest.mark.parametrize("path", sorted((ROOT / "scripts").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_scripts_name_only_what_the_package_has(path):
    missing = []
    for chain in dh_attribute_chains(path.read_text()):
        target = dh
        for part in chain:
            if not hasattr(target, part):
                missing.append(".".join(chain))
                break
            target = getattr(target, part)
    assert not missing, f"{path.name} uses names the package does not have: {sorted(set(missing))}"
