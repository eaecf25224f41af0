"""Every download source, by name.

A source is one module of this package that defines ``SOURCE``, a ``common.Source``: its
params model (the ``download`` keys it reads, with ``source: Literal["<name>"]``), its
``fetch`` (what the download stage does for it) and its ``list_items`` (how prepare reads what
fetch left in data/raw). Adding a source is one new module here plus its name in the import
and in ``MODULES`` below; tests/imgpipe/sources/test_registry.py checks that every module is
listed and fits the interface.

The modules are imported by name, not found at run time, so that what each stage depends on
can be read from its imports (tests/test_dvc_yaml.py checks dvc.yaml's deps that way).
"""

from __future__ import annotations

from imgpipe.sources import archive, cifar10, crawl, digits, folder, kaggle, table
from imgpipe.sources.common import Source

MODULES = (digits, folder, archive, cifar10, kaggle, crawl, table)

SOURCES: dict[str, Source] = {module.SOURCE.name: module.SOURCE for module in MODULES}
