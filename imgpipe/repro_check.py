"""repro-check: rerun the whole pipeline and compare it with what the repository records.

Data stages must reproduce exactly: every output's hash must equal the one in the committed
``dvc.lock``. Training is deterministic on one machine but floating point differs between
machines, so the metrics of the model stages are compared within ``check.metric_tolerance``.
Prints a table of every comparison and exits with status 1 on any difference.

    repro-check                # or: python -m imgpipe.repro_check, make repro-check
    repro-check augment        # the data stages only: up to augment, no training

With a stage named, only that stage and those before it are rerun and compared.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from imgpipe.cli import run_main
from imgpipe.errors import StageError
from imgpipe.params import CheckParams, load_params

log = logging.getLogger("imgpipe.repro_check")

# Timings differ on every run by nature; they are reported, never compared.
VOLATILE_METRICS = ("seconds", "per_second")


@dataclass(frozen=True)
class Finding:
    stage: str
    item: str
    expected: str
    got: str
    ok: bool


def read_yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise StageError(
            f"{path} is missing: run repro-check in the project's top folder (or pass --project)"
        ) from None
    except yaml.YAMLError as err:
        raise StageError(f"{path} is not valid YAML: {err}") from None


def out_hashes(lock: dict, stage: str) -> dict[str, str]:
    outs = lock.get("stages", {}).get(stage, {}).get("outs", [])
    return {out["path"]: out.get("md5") or out.get("hash", "") for out in outs}


def metric_files(dvc_yaml: dict, stage: str) -> list[str]:
    entries = dvc_yaml["stages"].get(stage, {}).get("metrics", [])
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]


def numeric_leaves(value: object, prefix: str = "") -> dict[str, float]:
    if isinstance(value, dict):
        leaves: dict[str, float] = {}
        for key, inner in value.items():
            leaves.update(numeric_leaves(inner, f"{prefix}.{key}" if prefix else str(key)))
        return leaves
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {prefix: float(value)}
    return {}


def read_metrics(project: Path, files: list[str]) -> dict[str, dict[str, float]]:
    metrics = {}
    for name in files:
        path = project / name
        if path.exists():
            metrics[name] = {
                key: number
                for key, number in numeric_leaves(
                    json.loads(path.read_text(encoding="utf-8"))
                ).items()
                if not key.endswith(VOLATILE_METRICS)
            }
    return metrics


def compare_hashes(stage: str, expected: dict[str, str], got: dict[str, str]) -> list[Finding]:
    return [
        Finding(
            stage,
            path,
            expected.get(path, "missing"),
            got.get(path, "missing"),
            expected.get(path) == got.get(path) and path in expected,
        )
        for path in sorted(set(expected) | set(got))
    ]


def compare_metrics(
    stage: str,
    expected: dict[str, dict[str, float]],
    got: dict[str, dict[str, float]],
    tolerance: float,
) -> list[Finding]:
    findings = []
    for name in sorted(set(expected) | set(got)):
        before, after = expected.get(name, {}), got.get(name, {})
        for key in sorted(set(before) | set(after)):
            a, b = before.get(key), after.get(key)
            ok = (
                a is not None and b is not None and math.isclose(a, b, rel_tol=0, abs_tol=tolerance)
            )
            findings.append(Finding(stage, f"{name}:{key}", _fmt(a), _fmt(b), ok))
    return findings


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.6g}"


def format_findings(findings: list[Finding], only_differences: bool) -> str:
    shown = [f for f in findings if not (only_differences and f.ok)]
    if not shown:
        return ""
    width = max(len(f.item) for f in shown)
    value = max(len(text) for f in shown for text in (f.expected, f.got))
    lines = [
        f"{'stage':<10} {'item':<{width}}  {'recorded':<{value}}  {'reproduced':<{value}}  result"
    ]
    for f in shown:
        lines.append(
            f"{f.stage:<10} {f.item:<{width}}  {f.expected:<{value}}  {f.got:<{value}}  "
            f"{'same' if f.ok else 'DIFFERS'}"
        )
    return "\n".join(lines)


def warn_if_params_uncommitted(project: Path) -> None:
    """The check reruns the workspace as it is; say so when that is not what was committed."""
    changed = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", "params.yaml"], cwd=project, check=False
    )
    if changed.returncode == 1:
        log.warning(
            "params.yaml differs from the last commit: the rerun uses the workspace's params. "
            "To check what was committed, commit or `git stash` the change first."
        )


def stages_through(dvc_yaml: dict, target: str | None) -> list[str]:
    """The pipeline's stages up to and including ``target`` (all without one), in order.

    The pipeline is one chain, written in dvc.yaml in the order it runs.
    """
    names = list(dvc_yaml["stages"])
    if target is None:
        return names
    if target not in names:
        raise StageError(f"no stage named {target!r} in dvc.yaml; stages: {', '.join(names)}")
    return names[: names.index(target) + 1]


def run(
    params: CheckParams, project: Path, reproduce: bool = True, target: str | None = None
) -> list[Finding]:
    dvc_yaml = read_yaml(project / "dvc.yaml")
    recorded_lock = read_yaml(project / "dvc.lock")
    checked = stages_through(dvc_yaml, target)
    exact_stages = [s for s in params.exact_stages if s in checked]
    model_stages = [s for s in checked if s not in params.exact_stages]
    recorded_metrics = {s: read_metrics(project, metric_files(dvc_yaml, s)) for s in model_stages}
    missing = [s for s in exact_stages if s not in recorded_lock.get("stages", {})]
    if missing:
        raise StageError(
            f"dvc.lock records no run of {', '.join(missing)}: run `dvc repro` "
            "and commit dvc.lock and reports/ first"
        )
    if reproduce:
        warn_if_params_uncommitted(project)
        # --force: with a warm cache DVC would skip everything and prove nothing.
        command = ["dvc", "repro", "--force", *([target] if target else [])]
        rerun = subprocess.run(command, cwd=project, check=False)
        if rerun.returncode:
            raise StageError(
                f"`{' '.join(command)}` failed with exit status {rerun.returncode}; its output "
                "above names the stage and the problem. Fix that, then run repro-check again."
            )
    new_lock = read_yaml(project / "dvc.lock")
    findings = []
    for stage in exact_stages:
        findings += compare_hashes(
            stage, out_hashes(recorded_lock, stage), out_hashes(new_lock, stage)
        )
    for stage in model_stages:
        findings += compare_metrics(
            stage,
            recorded_metrics[stage],
            read_metrics(project, metric_files(dvc_yaml, stage)),
            params.metric_tolerance,
        )
    return findings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "stage", nargs="?", help="check only this stage and those before it (default: all)"
    )
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--all", action="store_true", help="show matching items too")
    args = parser.parse_args(argv)
    outcome: list[int] = []

    def body() -> None:
        params = load_params(args.project / "params.yaml").check
        findings = run(params, args.project, target=args.stage)
        table = format_findings(findings, only_differences=not args.all)
        differing = [f for f in findings if not f.ok]
        # The table is the command's output, for people and CI logs alike.
        sys.stdout.write(
            (table + "\n" if table else "")
            + f"{len(findings) - len(differing)} of {len(findings)} outputs and metrics "
            f"reproduced (data stages exactly, metrics within {params.metric_tolerance})\n"
        )
        outcome.append(1 if differing else 0)

    run_main("repro-check", body)
    sys.exit(outcome[0])


if __name__ == "__main__":
    main()
