"""The book's structure: the table of contents, the repository URL and every chapter's first cell."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def config_value(key: str) -> str:
    text = (ROOT / "_config.yml").read_text()
    match = re.search(rf"^\s*{key}:\s*(\S+)", text, flags=re.MULTILINE)
    assert match, f"_config.yml has no {key}"
    return match.group(1)


def test_every_toc_entry_exists():
    entries = re.findall(r"(?:root|file):\s*(\S+)", (ROOT / "_toc.yml").read_text())
    assert entries
    for entry in entries:
        assert any((ROOT / f"{entry}{suffix}").is_file() for suffix in (".md", ".ipynb")), entry


# Chapters written and tested in tiny mode (CI executes them like the others) that have not had their
# first full run: the rendered book shows only full runs, so a draft stays out of the TOC until then.
DRAFTS: dict[str, str] = {}


def test_every_notebook_is_in_the_toc_or_a_draft_without_stored_outputs():
    toc = (ROOT / "_toc.yml").read_text()
    for notebook in NOTEBOOKS:
        if notebook.stem in DRAFTS:
            assert f"notebooks/{notebook.stem}" not in toc, f"{notebook.name} is in the TOC: remove it from DRAFTS"
            cells = json.loads(notebook.read_text())["cells"]
            stored = sum(len(cell.get("outputs", [])) for cell in cells if cell["cell_type"] == "code")
            assert stored == 0, f"draft {notebook.name} stores {stored} outputs: a draft keeps none until its full run"
        else:
            assert f"notebooks/{notebook.stem}" in toc, f"{notebook.name} is missing from _toc.yml"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_installs_from_the_configured_repository_and_prints_the_mode(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    first_code = next(cell for cell in cells if cell["cell_type"] == "code")
    source = "".join(first_code["source"])
    assert f"git+{config_value('url')}" in source, "the install URL must match _config.yml's repository url"
    assert "find_spec(\"ddpm_helpers\")" in source  # installs only when missing: Colab keeps its torch
    assert "dh.load_config()" in source and "print(cfg.summary())" in source


def test_bibliography_has_the_core_papers():
    bib = (ROOT / "book" / "references.bib").read_text()
    for key in ("ho2020denoising", "song2021denoising", "nichol2021improved", "rombach2022high", "ho2022classifier", "ronneberger2015unet"):
        assert f"{{{key}," in bib


# Every chapter ends with 3 to 5 exercises, MyST `exercise` directives each with its `solution`, and one
# hidden cell (tagged remove-cell, so the book omits it and the tests run it like any other) that checks
# the answers the solutions state.
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_has_three_to_five_exercises_with_solutions_and_a_hidden_check(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    markdown = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")
    exercises = re.findall(r"^:::\{exercise\}\n:label: (\S+)$", markdown, flags=re.MULTILINE)
    solutions = re.findall(r"^:::\{solution\} (\S+)$", markdown, flags=re.MULTILINE)
    assert markdown.count(":::{exercise}") == len(exercises), f"{notebook.name}: every exercise needs a :label: on its second line"
    assert 3 <= len(exercises) <= 5, f"{notebook.name} has {len(exercises)} exercises: a chapter needs 3 to 5, with checked answers"
    assert len(set(exercises)) == len(exercises) and sorted(solutions) == sorted(exercises), \
        f"{notebook.name}: exercises {exercises} and solutions {solutions} must pair one to one"
    checks = [cell for cell in cells if cell["cell_type"] == "code" and "".join(cell["source"]).startswith("# Checks the")]
    assert len(checks) == 1, f"{notebook.name} needs one code cell that checks the exercises' answers, found {len(checks)}"
    assert "remove-cell" in checks[0]["metadata"].get("tags", []), f"{notebook.name}: the answer check must be tagged remove-cell"


def test_exercise_labels_are_unique_across_the_book():
    labels = [label for notebook in NOTEBOOKS
              for label in re.findall(r"^:label: (\S+)$", "\n".join("".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"]
                                                                     if cell["cell_type"] == "markdown"), flags=re.MULTILINE)]
    assert len(labels) == len(set(labels)), sorted({label for label in labels if labels.count(label) > 1})
