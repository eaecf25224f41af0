"""dvc.yaml against the code: every stage lists what decides its outputs, at the contract's paths.

A module a stage imports but does not list as a dep would let a code change leave stale
outputs that `dvc repro` calls up to date, so the deps are checked against the imports
themselves, followed transitively through the project's own modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from imgpipe import layout
from tests.conftest import REPO_ROOT

PACKAGES = ("imgpipe", "stages")
DVC_YAML = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))
STAGES = DVC_YAML["stages"]


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name, or None for a module from elsewhere."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = REPO_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every project module ``path`` imports, at the top or inside a function."""
    package = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import, from the importing module's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            names.add(base)
            # `from imgpipe import atomic` names a module; `from imgpipe.x import f` a member.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if module_file(name) is not None}


def closure(path: Path) -> set[Path]:
    """``path`` and every project file it imports, directly or through other project files."""
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imported_modules(current):
            parts = name.split(".")
            # Importing a.b.c runs a/__init__.py and a/b/__init__.py as well.
            for depth in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:depth]))
                if found is not None:
                    todo.append(found)
    return seen


def only_a_docstring(path: Path) -> bool:
    """An empty package marker, which decides nothing."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def listed(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO_ROOT)
    return any(relative == Path(dep) or Path(dep) in relative.parents for dep in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_module_a_stage_imports_is_a_dep(stage):
    definition = STAGES[stage]
    assert definition["cmd"] == f"python -m stages.{stage}"
    entry = REPO_ROOT / "stages" / f"{stage}.py"
    missing = sorted(
        str(path.relative_to(REPO_ROOT))
        for path in closure(entry)
        if not listed(path, definition.get("deps", [])) and not only_a_docstring(path)
    )
    assert not missing, f"dvc.yaml: stage {stage} imports but does not list {missing}"


def test_the_dependency_walk_follows_imports_through_modules():
    found = {p.relative_to(REPO_ROOT).as_posix() for p in closure(REPO_ROOT / "stages/split.py")}
    # split imports params, which imports images: both must be found, and nothing of train.
    assert {"stages/split.py", "imgpipe/params.py", "imgpipe/images.py"} <= found
    assert "stages/train.py" not in found


def _declared(definition: dict, section: str) -> set[str]:
    return {
        entry if isinstance(entry, str) else next(iter(entry))
        for entry in definition.get(section, [])
    }


@pytest.mark.parametrize("stage", sorted(layout.STAGE_OUTPUTS))
def test_dvc_yaml_paths_are_the_layouts(stage):
    definition = STAGES[stage]
    written = _declared(definition, "outs") | _declared(definition, "metrics")
    written |= _declared(definition, "plots")
    assert written == set(layout.STAGE_OUTPUTS[stage])
    code = tuple(f"{package}/" for package in PACKAGES)
    data_deps = {dep for dep in definition.get("deps", []) if not dep.startswith(code)}
    assert data_deps == set(layout.STAGE_INPUTS[stage])


def test_the_layout_names_every_stage_of_the_pipeline():
    assert set(layout.STAGE_OUTPUTS) == set(STAGES) == set(layout.STAGE_INPUTS)
    every_path = set(vars(layout.Layout()).values())
    for paths in layout.STAGE_OUTPUTS.values():
        assert {Path(p) for p in paths} <= every_path | {
            Path(layout.TRAIN_LIVE) / "plots/metrics",
            Path(layout.TRAIN_LIVE) / "metrics.json",
        }
