"""The schematic figures (``scripts/make_schematics.py``): drawn, valid SVG, the same bytes on every run,
each shown by a chapter, in the book's colours; and every figure a chapter shows exists."""

from __future__ import annotations

import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import ddpm_helpers as dh

ROOT = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}svg"
FIGURE = re.compile(r"^```\{figure\}\s+(\S+)", re.M)
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)")
NAME = re.compile(r"^:name:\s*(\S+)", re.M)


def load_script():
    spec = importlib.util.spec_from_file_location("make_schematics", ROOT / "scripts" / "make_schematics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pages() -> dict[Path, str]:
    """The markdown of every page of the book: the notebooks' markdown cells and book/*.md."""
    texts = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        texts[path] = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")
    for path in sorted((ROOT / "book").glob("*.md")):
        texts[path] = path.read_text(encoding="utf-8")
    return texts


def shown_figures() -> dict[Path, list[Path]]:
    """Each page's figures and images, resolved against the page's folder (web addresses left out)."""
    return {page: [(page.parent / target).resolve() for target in FIGURE.findall(text) + IMAGE.findall(text) if "://" not in target]
            for page, text in pages().items()}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    script = load_script()
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    script.main(["--out", str(first)])
    script.main(["--out", str(second)])
    return script, first, second


def test_every_schematic_is_written_as_valid_svg(drawn):
    script, first, _ = drawn
    assert sorted(p.name for p in first.iterdir()) == sorted(script.SCHEMATICS)
    assert len(script.SCHEMATICS) >= 4
    for name in script.SCHEMATICS:
        root = ET.parse(first / name).getroot()
        assert root.tag == SVG, name
        assert float(root.get("width").removesuffix("pt")) > 0 and float(root.get("height").removesuffix("pt")) > 0
        assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 10, f"{name} draws almost nothing"


def test_the_schematics_are_deterministic(drawn):
    script, first, second = drawn
    for name in script.SCHEMATICS:
        assert (first / name).read_bytes() == (second / name).read_bytes(), f"{name} differs between two runs"
        assert b"<dc:date>" not in (first / name).read_bytes()


def test_every_schematic_is_in_the_book_and_shown_by_a_chapter(drawn):
    script, _, _ = drawn
    shown = {path for figures in shown_figures().values() for path in figures}
    for name in script.SCHEMATICS:
        committed = script.FIGURES / name
        assert committed.is_file(), f"{committed} missing: run python scripts/make_schematics.py"
        assert ET.parse(committed).getroot().tag == SVG
        assert committed.resolve() in shown, f"no chapter shows {name}"


def test_every_figure_a_page_shows_exists_and_every_figure_name_is_unique():
    for page, figures in shown_figures().items():
        for path in figures:
            assert path.is_file(), f"{page.relative_to(ROOT)} shows {path}, which does not exist"
    names = [name for text in pages().values() for name in NAME.findall(text)]
    assert len(names) == len(set(names)), f"a figure or directive :name: is used twice: {sorted(names)}"


def test_the_schematics_use_the_books_colours():
    assert load_script().COLORS == dh.COLORS
