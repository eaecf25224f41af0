"""Does a warm start pay on real photos? CIFAR-10 cat vs dog from 200 training images a class.

From ``../shared/datasets/cifar10-jpg.tar.gz`` (60,000 real 32x32 photos; not shipped with
the project, so the benchmark stops with a message where it is missing):

1. pretrain the ``cifar`` preset on the eight classes other than cat and dog (their whole
   training sets), through the real prepare, split, augment and train stages;
2. train cat vs dog from a seeded 200 images of each, tested on the 2,000 official test images
   of the two classes: once from scratch, once warm-started from step 1 (its classifier
   replaced, two frozen epochs, then everything at a tenth of the lr); same epochs, same data.

The row gives both test accuracies, and both training times in the log.
"""

from __future__ import annotations

import json
import logging
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import Comparison

log = logging.getLogger("benchmarks.transfer")

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpg.tar.gz"
TARGET = ("cat", "dog")
PER_CLASS = 200
SEED = 7


def _extract(root: Path, scale: float) -> tuple[Path, Path]:
    """Two folders of JPEGs: the eight other classes (train/ only), and cat vs dog."""
    if not ARCHIVE.exists():
        raise SystemExit(f"{ARCHIVE} is missing: this benchmark needs the CIFAR-10 archive")
    pretrain, target = root / "eight", root / "catdog"
    rng = np.random.default_rng(SEED)
    with tarfile.open(ARCHIVE) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(".jpg")]
        by_folder: dict[tuple[str, str], list[tarfile.TarInfo]] = {}
        for member in members:
            split, label = Path(member.name).parts[-3:-1]
            by_folder.setdefault((split, label), []).append(member)
        wanted = []
        for (split, label), found in sorted(by_folder.items()):
            found.sort(key=lambda m: m.name)
            if label in TARGET and split == "train":
                chosen = rng.choice(len(found), PER_CLASS, replace=False)
                wanted += [(target / "train" / label, found[i]) for i in sorted(chosen)]
            elif label in TARGET:
                wanted += [(target / "test" / label, m) for m in found]
            elif split == "train":
                keep = max(50, int(len(found) * scale))
                wanted += [(pretrain / label, m) for m in found[:keep]]
        for folder, member in wanted:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / Path(member.name).name).write_bytes(archive.extractfile(member).read())
    return pretrain, target


def _project(root: Path, photos: Path, keep_test: bool):
    from imgpipe.layout import Layout
    from imgpipe.params import parse_params
    from stages import augment, download, prepare, split

    layout = Layout.under(root)
    params = parse_params(
        {
            "download": {"source": "folder", "path": str(photos)},
            "prepare": {"size": [32, 32], "color": "rgb"},
            "split": {"val": 0.15, "test": 0.15, "keep_source_test": keep_test},
            "augment": {"per_class": 0},
        }
    )
    download.run(params.download, layout)
    prepare.run(params.prepare, layout)
    split.run(params.split, SEED, layout)
    augment.run(params.augment, SEED, layout)
    return layout


def _train(layout, **train):
    from imgpipe.params import EvaluateParams, TrainParams
    from stages import evaluate
    from stages import train as train_stage

    params = TrainParams(
        model="cifar",
        augmentation=[{"type": "flip"}, {"type": "translation", "factor": 0.1}],
        batch_size=32,
        **train,
    )
    started = time.perf_counter()
    train_stage.run(params, SEED, layout)
    seconds = time.perf_counter() - started
    evaluate.run(EvaluateParams(), layout)
    return json.loads(layout.metrics.read_text())["accuracy"], seconds


def run(scale: float = 1.0, repeats: int = 1) -> list[Comparison]:
    from imgpipe.params import FineTune

    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        root = Path(tmp)
        eight, catdog = _extract(root, scale)
        source = _project(root / "pretrain", eight, keep_test=False)
        accuracy, seconds = _train(source, epochs=8, lr=0.001)
        log.info("pretrained on 8 classes: %.3f test accuracy in %.0f s", accuracy, seconds)
        model = source.model / "model.keras"
        scratch, warm = [], []
        for attempt in range(repeats):
            project = _project(root / f"catdog-{attempt}", catdog, keep_test=True)
            scratch.append(_train(project, epochs=20, lr=0.001))
            warm.append(
                _train(
                    project,
                    epochs=20,
                    lr=0.001,
                    warm_start=str(model),
                    fine_tune=FineTune(frozen_epochs=2, lr_factor=0.1),
                )
            )
    log.info("from scratch: %s; warm start: %s (accuracy, seconds)", scratch, warm)
    return [
        Comparison(
            stage="train",
            what=f"cat vs dog test accuracy, {PER_CLASS} CIFAR-10 images a class",
            unit="accuracy",
            ours=float(np.median([a for a, _ in warm])),
            plain=float(np.median([a for a, _ in scratch])),
            plain_name="from scratch",
            samples={"warm start": [a for a, _ in warm], "from scratch": [a for a, _ in scratch]},
        )
    ]
