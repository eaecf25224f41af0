"""The registry lists every source module, and every source fits the one interface."""

import inspect
import pkgutil
import sys
import typing

import pytest

import imgpipe.sources
from imgpipe.sources import SOURCES
from imgpipe.sources.common import Source, SourceParams

HELPERS = {"common"}  # modules of the package that are not sources
MODULES = sorted(
    info.name for info in pkgutil.iter_modules(imgpipe.sources.__path__) if info.name not in HELPERS
)


def test_every_module_of_the_package_is_registered():
    assert sorted(SOURCES) == MODULES
    assert (
        sorted(module.__name__.rsplit(".", 1)[-1] for module in imgpipe.sources.MODULES) == MODULES
    )


@pytest.mark.parametrize("module", MODULES)
def test_each_source_implements_the_interface(module):
    source = sys.modules[f"imgpipe.sources.{module}"].SOURCE
    assert isinstance(source, Source)
    assert SOURCES[source.name] is source
    assert source.name == module
    assert issubclass(source.Params, SourceParams)
    assert source.Params.model_config["extra"] == "forbid"
    assert source.Params.model_config["frozen"] is True
    field = source.Params.model_fields["source"]
    assert typing.get_args(field.annotation) == (module,)
    assert field.default == module
    fetch = list(inspect.signature(source.fetch).parameters)
    assert fetch == ["params", "out_dir", "downloads_dir"]
    assert list(inspect.signature(source.list_items).parameters) == ["raw_dir", "source"]


def test_importing_the_sources_loads_no_optional_heavy_package():
    import subprocess

    code = (
        "import sys, imgpipe.params, imgpipe.raw, stages.download; "
        "print(sorted(m for m in ('sklearn', 'kaggle', 'icrawler') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
