"""Sphinx configuration: the API reference is read from the docstrings (autodoc + napoleon)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import deltarnn  # noqa: E402

project = "deltarnn"
author = "the deltarnn authors"
copyright = "2026, the deltarnn authors"
release = version = deltarnn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = ["_static"]
