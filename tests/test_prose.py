"""Numbers in the prose come from the run: glued numbers, checked claims, and a count of typed ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import ddpm_helpers as dh

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_manifest  # noqa: E402

# Facts of the data and the notation, not results of a run: MNIST's 10,000 test images and 60,000
# official training images, and the 1,024 pixels of a 32×32 image.
ALLOWED = frozenset({"10,000", "60,000", "1,024"})

# Numbers typed into each chapter's markdown that look like results (decimals, percentages, counts
# such as 11,823), counted by dh.claims.typed_numbers. They predate the glue mechanism and go when
# each chapter is converted in its one re-run of the trust pass (issue 31). A count may only fall:
# a chapter that types a new number fails, and one that glues some must lower its count here. A
# chapter not listed (every new one) may type none.
KNOWN_TYPED: dict[str, int] = {}


def markdown_of(chapter: str) -> str:
    notebook = json.loads((ROOT / f"{chapter}.ipynb").read_text())
    return "\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown")


@pytest.mark.parametrize("chapter", make_manifest.chapters())
def test_no_chapter_types_more_result_like_numbers_than_it_did(chapter):
    typed = dh.claims.typed_numbers(markdown_of(chapter), ALLOWED)
    known = KNOWN_TYPED.get(chapter, 0)
    assert len(typed) <= known, f"{chapter} types {len(typed)} result-like numbers in its prose, {len(typed) - known} more than before: glue them from the cell that computes them ({typed})"
    assert len(typed) == known, f"{chapter} now types {len(typed)} result-like numbers, fewer than {known}: lower its count in KNOWN_TYPED"


def test_typed_numbers_ignores_glue_maths_code_links_and_the_allowed():
    text = ("FID {glue:text}`fid` against 1.45 before, 89.3% confident, 11,823 images; "
            "$\\beta_1 = 0.0001$, `lr=2e-3`, [the paper](https://x.org/v1.5), {cite}`ho2020`, chapter 4 with T = 1000, 10,000 test digits.\n"
            "$$\\bar\\alpha = 0.999$$")
    assert dh.claims.typed_numbers(text, ALLOWED) == ["1.45", "89.3%", "11,823"]


def test_a_number_is_formatted_recorded_and_named_once():
    prose = dh.claims.Prose(enforce=True)
    assert prose.number("fid", 1.4512, ".2f") is None  # nothing to display when it ends a cell
    prose.number("images", 11823, ",d")
    prose.number("share", 0.893, ".1%")
    assert [prose.text(name) for name in ("fid", "images", "share")] == ["1.45", "11,823", "89.3%"]
    with pytest.raises(KeyError, match="no number is glued under 'kid'"):
        prose.text("kid")
    assert prose.results()["numbers"] == {"fid": 1.4512, "images": 11823, "share": 0.893}
    with pytest.raises(ValueError, match="already glued"):
        prose.number("fid", 2.0)
    for bad, match in (({"name": "1fid", "value": 1.0}, "name must be"), ({"name": "x", "value": float("nan")}, "must be finite"),
                       ({"name": "y", "value": True}, "must be a number"), ({"name": "z", "value": 1.5, "fmt": "d"}, "cannot format")):
        with pytest.raises(ValueError, match=match):
            prose.number(**bad)


def test_a_false_claim_stops_a_full_run_and_is_recorded_in_a_tiny_one():
    full = dh.claims.prose_for(dh.FULL)
    full.claim("the new recipe is faster", 5.0 < 7.0, new=5.0, old=7.0)
    assert full.results()["claims"][0]["holds"] is True
    with pytest.raises(dh.claims.FalseClaim, match="the new recipe is better"):
        full.claim("the new recipe is better", 1.6 < 1.5, new=1.6, old=1.5)
    tiny = dh.claims.prose_for(dh.TINY)
    assert tiny.claim("the new recipe is better", 1.6 < 1.5, new=1.6, old=1.5) is None  # recorded, not raised
    recorded = tiny.results()["claims"]
    assert recorded == [{"text": "the new recipe is better", "holds": False, "evidence": {"new": 1.6, "old": 1.5}}]
    json.dumps(recorded, allow_nan=False)  # goes into the provenance record as strict JSON


@pytest.mark.parametrize("holds, evidence, match", [
    (1, {}, "holds must be a bool"),
    (True, {"fid": float("nan")}, "finite JSON"),
    (True, {"device": object()}, "finite JSON"),
])
def test_claims_refuse_what_is_not_computed(holds, evidence, match):
    with pytest.raises(ValueError, match=match):
        dh.claims.Prose(enforce=False).claim("a claim", holds, **evidence)


def test_glue_outside_a_kernel_does_nothing(capsys):
    dh.claims.glue("fid", "1.45")
    assert capsys.readouterr().out == ""


# Glued texts are shown as plain text by {glue:text}: a "$s$" in one appears on the page as "$s$", not as
# maths. Code writes "s = 1.5", never "$s$ = 1.5". These stored texts predate the check; they go when
# each chapter is next re-run (the book-wide re-run of issue 31). The lists may only shrink.
KNOWN_DOLLAR_GLUE: dict[str, set[str]] = {}


def glued_texts(chapter: str) -> dict[str, str]:
    """Every text the chapter's stored outputs glue, by name."""
    notebook = json.loads((ROOT / f"{chapter}.ipynb").read_text())
    texts = {}
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            for mime, value in output.get("data", {}).items():
                if name and mime.startswith(dh.claims.GLUE_MIME_PREFIX):
                    texts[name] = value if isinstance(value, str) else json.dumps(value)
    return texts


@pytest.mark.parametrize("chapter", make_manifest.chapters())
def test_no_glued_text_holds_tex_that_the_page_would_show_raw(chapter):
    with_dollar = {name for name, text in glued_texts(chapter).items() if "$" in text}
    known = KNOWN_DOLLAR_GLUE.get(chapter, set())
    assert with_dollar <= known, f"{chapter} glues TeX that {{glue:text}} shows raw, in {sorted(with_dollar - known)}: write 's = 1.5', not '$s$ = 1.5'"
    assert with_dollar == known, f"{chapter} no longer glues TeX in {sorted(known - with_dollar)}: remove them from KNOWN_DOLLAR_GLUE"
