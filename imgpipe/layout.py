"""Where every stage reads and writes: the paths of the stage contract, in one place.

Paths are relative to the project folder, where DVC runs every stage. ``dvc.yaml`` names the
same paths (a test checks that the two agree), and ``STAGE_OUTPUTS`` says which stage writes
which of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

PARAMS = "params.yaml"
# Written by `validate` once params.yaml passes every check; `download` depends on it so that
# no stage starts on params that fail. Its content never varies, so it reruns nothing itself.
PARAMS_CHECKED = "data/params-checked.json"
RAW = "data/raw"
PREPARED = "data/prepared"
SPLIT = "data/split"
LEAKAGE = "leakage.json"  # in data/split: near duplicates across splits, read by evaluate
AUGMENTED = "data/augmented"
MODEL = "data/model"
PREPARE_REPORT = "reports/prepare.json"
PREPARE_PREVIEW = "reports/prepare/preview.png"
PREPARE_QUALITY = "reports/prepare/quality"  # a picture per image-quality flag
# The closest near-duplicate pairs that sit in two splits (the source fixed its test set).
SPLIT_PAIRS_IMAGE = "reports/split/cross_split_pairs.png"
AUGMENT_PREVIEW = "reports/augment_preview.png"
TRAIN_LIVE = "reports/train"  # dvclive: metrics.json and plots/metrics/
TRAIN_CURVES = "reports/train/curves.png"
METRICS = "reports/metrics.json"
PREDICTIONS = "reports/predictions.csv"
EVALUATE_PLOTS = "reports/evaluate"
EXPORT = "data/export"
EXPORT_REPORT = "reports/export.json"
LABEL_ISSUES = "reports/label_issues.csv"  # likely label errors, the likeliest first
AUDIT_REPORT = "reports/audit.json"
AUDIT_GALLERY = "reports/audit/label_issues.png"
# Kept between runs outside DVC's outputs (DVC empties an output before its stage runs):
# partial and verified downloads, to resume and reuse them; training state, to resume a kill.
DOWNLOADS = ".downloads"
TRAIN_BACKUP = ".train-backup"
TENSORBOARD = "logs/tensorboard"
# How long training took: varies by run, so not an output DVC tracks (git ignores logs/).
TRAIN_TIMING = "logs/train-timing.json"
# How fast each export runs on this machine: a timing, so kept out of DVC's outputs likewise.
EXPORT_TIMING = "logs/export-timing.json"

# What each stage writes, as dvc.yaml declares it (outs, metrics and plots together).
STAGE_OUTPUTS = {
    "validate": (PARAMS_CHECKED,),
    "download": (RAW,),
    "prepare": (PREPARED, PREPARE_REPORT, PREPARE_PREVIEW, PREPARE_QUALITY),
    "split": (SPLIT, SPLIT_PAIRS_IMAGE),
    "augment": (AUGMENTED, AUGMENT_PREVIEW),
    "train": (MODEL, f"{TRAIN_LIVE}/plots/metrics", f"{TRAIN_LIVE}/metrics.json", TRAIN_CURVES),
    "evaluate": (METRICS, PREDICTIONS, EVALUATE_PLOTS),
    "export": (EXPORT, EXPORT_REPORT),
    "audit": (LABEL_ISSUES, AUDIT_REPORT, AUDIT_GALLERY),
}
# The data each stage reads from the stages before it.
STAGE_INPUTS = {
    "validate": (PARAMS,),
    "download": (PARAMS_CHECKED,),
    "prepare": (RAW,),
    "split": (PREPARED,),
    "augment": (PREPARED, SPLIT),
    "train": (PREPARED, SPLIT, AUGMENTED),
    "evaluate": (MODEL, PREPARED, SPLIT),
    "export": (MODEL, PREPARED, SPLIT),
    "audit": (PREPARED, SPLIT),
}


@dataclass(frozen=True)
class Layout:
    """The contract's paths, relative to the project folder unless built by ``under(root)``.

    Stages take one ``Layout`` instead of a list of paths; a test gives its own with
    ``Layout.under(tmp_path)``, or moves one path with ``dataclasses.replace``.
    """

    params: Path = Path(PARAMS)
    params_checked: Path = Path(PARAMS_CHECKED)
    raw: Path = Path(RAW)
    downloads: Path = Path(DOWNLOADS)
    prepared: Path = Path(PREPARED)
    prepare_report: Path = Path(PREPARE_REPORT)
    prepare_preview: Path = Path(PREPARE_PREVIEW)
    prepare_quality: Path = Path(PREPARE_QUALITY)
    split: Path = Path(SPLIT)
    split_pairs_image: Path = Path(SPLIT_PAIRS_IMAGE)
    augmented: Path = Path(AUGMENTED)
    augment_preview: Path = Path(AUGMENT_PREVIEW)
    model: Path = Path(MODEL)
    train_live: Path = Path(TRAIN_LIVE)
    train_curves: Path = Path(TRAIN_CURVES)
    train_backup: Path = Path(TRAIN_BACKUP)
    tensorboard: Path = Path(TENSORBOARD)
    train_timing: Path = Path(TRAIN_TIMING)
    metrics: Path = Path(METRICS)
    predictions: Path = Path(PREDICTIONS)
    evaluate_plots: Path = Path(EVALUATE_PLOTS)
    export: Path = Path(EXPORT)
    export_report: Path = Path(EXPORT_REPORT)
    export_timing: Path = Path(EXPORT_TIMING)
    label_issues: Path = Path(LABEL_ISSUES)
    audit_report: Path = Path(AUDIT_REPORT)
    audit_gallery: Path = Path(AUDIT_GALLERY)

    @classmethod
    def under(cls, root: Path | str) -> Layout:
        """Every path of the contract below ``root`` instead of the current folder."""
        root = Path(root)
        return cls(**{f.name: root / f.default for f in fields(cls)})


PROJECT_MARKER = "dvc.yaml"


def find_project(start: Path | str = ".") -> Path | None:
    """The nearest folder at or above ``start`` holding dvc.yaml, or None outside any project.

    Lets a command such as ``predict`` find the project's trained model when it is run from
    a sub-folder or from elsewhere by path.
    """
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_MARKER).is_file():
            return folder
    return None


# Where `dvc exp run --temp` and `dvc queue` run an experiment: a copy of the project inside
# the project's own .dvc/tmp/exps/, holding only what git tracks.
EXPERIMENT_COPIES = (".dvc", "tmp", "exps")
# What DVC sets for every stage command: the project's folder. For an experiment run in a
# copy, DVC sets it to the project the experiment was queued in, not to the copy (DVC 3.x).
DVC_ROOT_VARIABLE = "DVC_ROOT"


def original_project(start: Path | str = ".") -> Path | None:
    """The project a DVC experiment copy at ``start`` was made from, or None outside one.

    Told by DVC_ROOT when DVC runs the stage in a copy (below the project's .dvc/ or outside
    the project); otherwise (a stage run by hand in a copy) read from where the copy lies.
    """
    here = Path(start).resolve()
    told = os.environ.get(DVC_ROOT_VARIABLE)
    if told:
        root = Path(told).resolve()
        inside = here.is_relative_to(root) and not here.is_relative_to(root / ".dvc")
        if not inside:
            return root
    parts = here.parts
    for index in range(len(parts) - len(EXPERIMENT_COPIES) + 1):
        if parts[index : index + len(EXPERIMENT_COPIES)] == EXPERIMENT_COPIES:
            return Path(*parts[:index])
    return None


def local_path(written: str | Path) -> Path:
    """A user's path from params.yaml, as the stage should open it.

    A relative path is relative to the project folder, where DVC runs every stage. In an
    experiment's temporary copy, a path that the copy lacks (a folder of photos git ignores,
    an archive beside the project) is taken from the project the copy was made from, so
    queued and --temp experiments see the same files as `dvc repro`.
    """
    path = Path(written).expanduser()
    if path.is_absolute() or path.exists():
        return path
    origin = original_project()
    if origin is not None and (origin / path).exists():
        return origin / path
    return path
