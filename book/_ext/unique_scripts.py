"""A Sphinx extension of this book: each page's scripts once.

Under Jupyter Book 1, the inline configuration scripts of sphinx-thebe and sphinx-togglebutton
reach every page twice, and the second ``const THEBE_JS_URL`` is a JavaScript error on every page
(a redeclared constant). This drops exact repeats (same file, same attributes and body; an inline script's file
is None or "" depending on the extension that added it) from the
page's script list, keeping the first, so the order of everything else is unchanged.
"""

from __future__ import annotations


def _key(script: object) -> tuple:
    """What makes two script tags the same; an inline script's file is None or "" depending on who added it."""
    attributes = getattr(script, "attributes", {}) or {}
    return (str(getattr(script, "filename", script) or ""), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def unique_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    kept = []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
