"""Stored outputs cannot go stale unnoticed: each chapter records the run that produced them."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

import ddpm_helpers as dh

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_manifest  # noqa: E402
import run_chapter  # noqa: E402

# Chapters whose stored outputs predate the provenance record, or the current package, and are
# due for one re-run with the final weights (the trust pass). The list may only shrink: a chapter
# on it that has become fresh fails the test below until it is removed.
KNOWN_STALE: dict[str, str] = {}


def test_config_hash_follows_the_fields_a_chapter_uses():
    base = dh.provenance.config_hash(dh.FULL, ("data", "diffusion"))
    assert base == dh.provenance.config_hash(dh.FULL, ("diffusion", "data", "data"))  # order and repeats do not matter
    changed_used = dh.FULL.replace(diffusion=dh.FULL.diffusion.replace(schedule="cosine"))
    changed_unused = dh.FULL.replace(train=dh.FULL.train.replace(lr=1e-3))
    assert dh.provenance.config_hash(changed_used, ("data", "diffusion")) != base
    assert dh.provenance.config_hash(changed_unused, ("data", "diffusion")) == base
    with pytest.raises(ValueError, match="uses must name fields of the config"):
        dh.provenance.config_hash(dh.FULL, ("optimiser",))


def test_a_field_added_at_its_old_behaviour_leaves_the_hash_alone():
    """A field listed in ADDED_FIELDS hashes as if it did not exist while it has the value that does
    what the code did before it; another value is a change like any other."""
    for (component, field), before in dh.provenance.ADDED_FIELDS.items():
        assert getattr(getattr(dh.FULL, component), field) == before, f"{component}.{field}: FULL's default is not the recorded old behaviour"
    base = dh.provenance.config_hash(dh.FULL, ("train",))
    values = dh.FULL.to_dict()["train"]
    for (component, field), _ in dh.provenance.ADDED_FIELDS.items():
        if component == "train":  # the data field is checked the same way in test_fashion_mnist.py
            values.pop(field)
    assert base == hashlib.sha256(json.dumps({"train": values}, sort_keys=True).encode()).hexdigest()[:16]
    logit = dh.FULL.replace(train=dh.FULL.train.replace(timestep_sampling="logit_normal"))
    assert dh.provenance.config_hash(logit, ("train",)) != base


def test_a_record_round_trips_through_a_notebook(tmp_path):
    record = dh.provenance.record("toy", dh.TINY, "CPU", uses=("diffusion",), results={"fid": {"value": 1.5, "n": 1000}})
    bundle = record._repr_mimebundle_()
    assert bundle["text/plain"].startswith("toy: tiny mode, ran in")
    notebook = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "execute_result", "data": bundle}]}]}
    path = tmp_path / "toy.ipynb"
    path.write_text(json.dumps(notebook))
    assert dh.provenance.read_notebook(path) == json.loads(json.dumps(bundle[dh.provenance.MIME_TYPE]))
    with pytest.raises(ValueError, match="results must hold JSON values"):
        dh.provenance.record("toy", dh.TINY, "CPU", uses=("diffusion",), results={"bad": object()})


@pytest.mark.parametrize("chapter", make_manifest.chapters())
def test_stored_outputs_come_from_a_full_run_with_todays_configuration(chapter):
    record = dh.provenance.read_notebook(ROOT / f"{chapter}.ipynb")
    problems = []
    if record is None:
        problems.append("no provenance record")
    else:
        if record["mode"] != "full":
            problems.append(f"outputs from {record['mode']} mode")
        today = dh.provenance.config_hash(dh.FULL, record["uses"])
        if record["config_hash"] != today:
            problems.append(f"made with other values of {record['uses']} ({record['config_hash']} vs today's {today})")
    if chapter in KNOWN_STALE:
        if not problems:
            pytest.fail(f"{chapter} is fresh now: remove it from KNOWN_STALE")
        pytest.xfail(f"{chapter}: {KNOWN_STALE[chapter]} ({'; '.join(problems)})")
    assert not problems, f"{chapter} has stale outputs: {'; '.join(problems)}; re-run it with scripts/run_chapter.py"


def test_results_manifest_agrees_with_the_notebooks():
    expected = json.dumps(make_manifest.manifest(), indent=2) + "\n"
    assert (ROOT / "results.json").read_text() == expected, "results.json is out of date: run python scripts/make_manifest.py"


def test_a_chapter_edited_during_its_run_keeps_both_versions(tmp_path):
    chapter = tmp_path / "chapter.ipynb"
    chapter.write_text("the source as the run began")
    executed = run_chapter.executed_path(chapter)
    assert executed.parent == chapter.parent and executed.name.startswith(".")  # beside it, hidden from globs
    at_start = run_chapter.digest(chapter)

    executed.write_text("executed")
    chapter.write_text("an edit saved during the run")
    with pytest.raises(SystemExit, match="chapter.ipynb was edited during the run"):
        run_chapter.replace_if_unchanged(chapter, executed, at_start)
    assert chapter.read_text() == "an edit saved during the run" and executed.read_text() == "executed"

    chapter.write_text("the source as the run began")  # unchanged: the outputs replace the chapter
    run_chapter.replace_if_unchanged(chapter, executed, at_start)
    assert chapter.read_text() == "executed" and not executed.exists()


def test_chapter_4_levers_table_lists_every_recorded_recipe_run():
    """Chapter 4 reads the recipe benchmark's results from the repository, which its provenance
    record does not cover: a run recorded after the chapter's own run is missing from its stored
    table until the chapter is re-run, and no other test would notice."""
    recorded = set()
    for path in (ROOT / "benchmarks" / "results").glob("recipe_*-cpu.json"):
        run = json.loads(path.read_text())
        if "summary" in run and run["results"].get("checkpoints"):  # the same filter as the chapter's cell
            recorded.add(run["results"]["name"])
    notebook = json.loads((ROOT / "notebooks" / "04_training.ipynb").read_text())
    tables = ["".join(output.get("text", "")) for cell in notebook["cells"] if cell["cell_type"] == "code"
              for output in cell.get("outputs", []) if "changes (config fields)" in "".join(output.get("text", ""))]
    assert len(tables) == 1, f"expected one stored levers table in chapter 4, found {len(tables)}"
    shown = {line.split()[0] for line in tables[0].splitlines()[1:] if line.strip()}
    assert shown == recorded, (f"chapter 4's stored levers table shows {sorted(shown)} but benchmarks/results records "
                               f"{sorted(recorded)}: re-run the chapter with scripts/run_chapter.py")
