"""Every download source, by name.

A source is one module of this package that defines ``SOURCE``, a ``common.Source``: its
params model (the ``download`` keys it reads, with ``source: Literal["<name>"]``), its
``fetch`` (what the download stage does for it) and its ``list_items`` (how prepare reads what
fetch left in data/raw). Adding a source is one new module here plus one line in ``MODULES``;
tests/imgpipe/sources/test_registry.py checks that every module is listed and fits the
interface.
"""

from __future__ import annotations

from importlib import import_module

from imgpipe.sources.common import Source

MODULES = (
    "digits",
    "folder",
    "archive",
    "cifar10",
    "kaggle",
    "crawl",
)

SOURCES: dict[str, Source] = {
    source.name: source
    for source in (import_module(f"{__name__}.{module}").SOURCE for module in MODULES)
}
