"""The package's version, in a module that imports nothing, so that any module may read it
(``ddpm_helpers.provenance`` records it) without importing the whole package."""

__version__ = "0.2.0"  # keep equal to pyproject.toml's version
