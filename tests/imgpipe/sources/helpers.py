"""What the source tests share: tiny images, their checksums, and the pipeline after download."""

import hashlib
import io
import json

from imgpipe.params import (
    AugmentParams,
    EvaluateParams,
    PrepareParams,
    SplitParams,
    TrainParams,
    parse_params,
)
from stages import augment, evaluate, prepare, split, train
from tests.conftest import class_image, layout_of


def dl_params(**raw):
    """``download`` params as params.yaml gives them: through the union on ``source``."""
    return parse_params({"download": raw}).download


def png(label_index: int, sample: int, size=(24, 24)) -> bytes:
    buffer = io.BytesIO()
    class_image(label_index, sample, size).save(buffer, format="PNG")
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_pipeline(raw, tmp_path, classes, prepare_params=None):
    """Every stage after download, in order, below tmp_path; returns the test metrics."""
    layout = layout_of(tmp_path, raw=raw)
    prepare.run(prepare_params or PrepareParams(size=(16, 16), color="rgb", workers=1), layout)
    split.run(SplitParams(val=0.2, test=0.2), 3, layout)
    augment.run(AugmentParams(per_class=0, workers=1), 3, layout)
    # One epoch is enough to show that this source's data reaches a model and its metrics.
    train.run(TrainParams(epochs=1, batch_size=16, lr=0.003), 3, layout)
    evaluate.run(EvaluateParams(), layout)
    assert (layout.model / "model.keras").stat().st_size > 0
    assert json.loads((layout.model / "classes.json").read_text()) == classes
    metrics = json.loads(layout.metrics.read_text())
    assert set(metrics["per_class"]) == set(classes)
    return metrics


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
