"""Nothing a reader puts into a label or a title can become markup in the published book.

Every function of the package that writes HTML (found by the marker test at the bottom, which fails
when a new one appears) gets hostile labels and titles. Its output must parse back to exactly the
same text, hold only the elements it is built from, and keep its script closed: no "<" inside the
inline script at all (a browser ends a script at the first "</script", whatever JavaScript quotes
it is in), and no raw U+2028/U+2029 (line terminators inside string literals in older engines).
Where Node.js is installed, the slider's script is run against a stub of the page to check that
JavaScript reads the labels back unchanged.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import ddpm_helpers as dh  # noqa: E402

PACKAGE = Path(dh.__file__).parent
HOSTILE = [
    "</script><script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</SCRIPT ><svg onload=alert(1)>",
    "<!--<script>",
    "' onmouseover='alert(1)",
    'say "hi" & <b>bye</b>',
    "line\u2028separator\u2029paragraph",
    "\\u003c/script>",  # an escape sequence typed as text stays text
    "t = 0 (paper's numbering)",  # an ordinary label
]


class Page(HTMLParser):
    """The parts of a fragment a browser would build: elements, their attributes, the text inside each
    element (keyed by its class, or its tag where it has none) and the script."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, dict]] = []
        self.text: dict[str, str] = {}
        self.scripts: list[str] = []
        self._open: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.append((tag, dict(attrs)))
        if tag not in ("input", "img", "br"):
            self._open.append(dict(attrs).get("class") or tag)

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        owner = self._open[-1] if self._open else ""
        if owner == "script":
            self.scripts.append(data)
        else:
            self.text[owner] = self.text.get(owner, "") + data

    def first(self, tag: str, **having: str) -> dict:
        return next(a for t, a in self.attributes if t == tag and all(a.get(k) == v for k, v in having.items()))


def draw(value):
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, value])
    return fig


def script_labels(script: str) -> list[str]:
    """The labels array as the script literal defines it (JSON is a subset of JavaScript)."""
    start = script.index("var labels=") + len("var labels=")
    return json.JSONDecoder().raw_decode(script, start)[0]


def slider_with(label: str, title: str) -> dh.interactive.FrameSlider:
    return dh.interactive.frame_slider(draw, [1, 2], [label, "plain"], title=title)


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_label_and_title_stay_text_in_the_slider(text):
    slider = slider_with(text, title=text)
    for html in (slider.to_html(), slider._repr_html_()):
        page = Page(html)
        # only the elements the slider is built from, none injected
        assert sorted(page.tags) == sorted(["div", "div", "input", "span", "br", "img", "script"])
        assert len(page.scripts) == 1
        script = page.scripts[0]
        assert "<" not in script and "\u2028" not in script and "\u2029" not in script
        assert html.lower().count("<script") == 1 and html.lower().count("</script") == 1 and html.endswith("</script></div>")
        # everything reads back as the very same text
        assert script_labels(script) == [text, "plain"]
        assert page.text["dh-label"] == text and page.first("img")["alt"] == text
        assert page.text["dh-title"] == text and page.first("input")["aria-label"] == text


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_title_stays_text_in_the_widget(text):
    box = slider_with("a", title=text).widget()
    page = Page(box.children[0].value)
    assert page.tags == [] and page.text.get("", "") == text


@pytest.mark.parametrize("value", [["</script>", "<!--", "&amp;", "\u2028\u2029"], {"k": "</script>"}, "a > b"])
def test_script_json_reads_back_as_the_value_and_has_no_markup(value):
    text = dh.interactive.script_json(value)
    assert json.loads(text) == value
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}


def test_ordinary_text_is_written_as_json_dumps_writes_it():
    value = ["0.0", "s = 1.5", "t = 50 (paper's t)", "data:image/png;base64,iVBORw0KGgo="]
    assert dh.interactive.script_json(value) == json.dumps(value)


NODE_STUB = """
const script = require('fs').readFileSync(0, 'utf8');
const make = () => ({ value: '1', src: '', alt: '', textContent: '', handlers: {},
                      addEventListener(kind, f) { this.handlers[kind] = f; } });
const parts = { input: make(), img: make(), label: make() };
const root = { querySelector: (q) => q === 'input' ? parts.input : q === 'img.dh-frame' ? parts.img : parts.label };
global.document = { getElementById: () => root };
eval(script);
const shown = [];
for (const i of ['0', '1']) { parts.input.value = i; parts.input.handlers.input(); shown.push([parts.label.textContent, parts.img.alt]); }
process.stdout.write(JSON.stringify(shown));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_javascript_reads_the_labels_back_unchanged(text):
    html = slider_with(text, title="t").to_html()
    # what a browser hands to JavaScript: the text up to the first "</script", in any case
    body = re.split(r"</script", html.split("<script>", 1)[1], maxsplit=1, flags=re.IGNORECASE)[0]
    out = subprocess.run(["node", "-e", NODE_STUB], input=body, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [[text, text], ["plain", "plain"]]


@pytest.mark.parametrize("bad,phrase", [
    (dict(labels=(5, "b")), r"labels must be strings .* got int 5 at labels\[0\]"),
    (dict(labels=("a", None)), r"got NoneType None at labels\[1\]"),
    (dict(title=3), "title must be a string, got int 3"),
])
def test_labels_and_titles_that_are_not_text_are_refused_by_name(bad, phrase):
    png = dh.interactive.figure_png(draw(1))
    arguments = dict(frames=(png, png), labels=("a", "b")) | bad
    with pytest.raises(ValueError, match=phrase):
        dh.interactive.FrameSlider(**arguments)


# the census: every place in the package that writes HTML is one this file tests ---------------------

HTML_MARKERS = re.compile(r"<script|<div|<span|<img|<table|<p>|_repr_html_|text/html|widgets\.HTML|IPython\.display\.HTML")
COVERED = {"interactive.py"}  # FrameSlider.to_html, ._repr_html_, .widget (and frame_slider, which builds one)


def test_every_module_that_writes_html_is_covered_here():
    writers = {path.name for path in PACKAGE.glob("*.py") if HTML_MARKERS.search(path.read_text())}
    assert writers == COVERED, f"modules writing HTML without a hostile-text test here: {sorted(writers - COVERED)}"
