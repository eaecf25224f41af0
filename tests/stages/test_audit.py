"""audit on learnable stripes with labels made wrong on purpose: they come out on top."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from imgpipe.errors import MissingInputError, StageError
from imgpipe.label_issues import COLUMNS
from imgpipe.layout import Layout
from imgpipe.params import AuditParams, PrepareParams, SplitParams
from stages import audit, prepare, split
from tests.conftest import class_image, write_class_folders

CLASSES = ["low", "middle", "top"]
# Logistic regression on the pixels: the stripe's row is all it needs, and it trains in seconds.
PARAMS = AuditParams(folds=3, model=[{"type": "flatten"}], epochs=25, lr=0.01, batch_size=16)
# (true class index, sample number, folder it is wrongly filed in)
MISFILED = [(0, 900, "top"), (2, 901, "low"), (1, 902, "low"), (0, 903, "middle")]


def _project(root: Path) -> Layout:
    layout = Layout.under(root)
    write_class_folders(layout.raw, CLASSES, per_class=30)
    for label, sample, folder in MISFILED:
        class_image(label, sample).save(layout.raw / "images" / folder / f"misfiled-{sample}.png")
    prepare.run(PrepareParams(size=(16, 16), color="rgb", workers=1), layout)
    split.run(SplitParams(val=0.2, test=0.2), 7, layout)
    return layout


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> tuple[Layout, dict]:
    layout = _project(tmp_path_factory.mktemp("audit"))
    return layout, audit.run(PARAMS, 3, layout)


def test_misfiled_images_are_the_top_suspects_with_their_true_class_suggested(audited):
    layout, report = audited
    issues = pd.read_csv(layout.label_issues, dtype=str)
    assert list(issues.columns) == COLUMNS
    top = issues.head(len(MISFILED))
    expected = {f"images/{folder}/misfiled-{n}.png": CLASSES[i] for i, n, folder in MISFILED}
    assert set(top["origin"]) == set(expected)
    assert all(expected[o] == s for o, s in zip(top["origin"], top["suggested_label"], strict=True))
    assert top["rank"].tolist() == ["1", "2", "3", "4"]
    assert issues["score"].astype(float).is_monotonic_increasing
    # Few correct labels flagged beside them: the fold models are good on this data.
    assert report["flagged"] <= len(MISFILED) + 2
    assert report["audited"] == 3 * 30 + len(MISFILED)
    assert report["out_of_sample_accuracy"]["train_val"] >= 0.9


def test_report_counts_every_split_and_the_gallery_is_written(audited):
    layout, report = audited
    on_disk = json.loads(layout.audit_report.read_text())
    assert on_disk == json.loads(json.dumps(report))
    issues = pd.read_csv(layout.label_issues, dtype=str)
    for name in ("train", "val", "test"):
        ids = pd.read_csv(layout.split / f"{name}.csv", dtype=str)["id"]
        assert report["by_split"][name]["audited"] == len(ids)
        assert report["by_split"][name]["flagged"] == int((issues["split"] == name).sum())
        assert set(issues.loc[issues["split"] == name, "id"]) <= set(ids)
    assert sum(report["by_given_label"].values()) == report["flagged"]
    with Image.open(layout.audit_gallery) as picture:
        assert picture.format == "PNG" and picture.width > 300


def test_same_inputs_and_seed_give_the_same_ranking(audited, tmp_path):
    layout, _ = audited
    again = Layout.under(tmp_path)
    shutil.copytree(layout.prepared, again.prepared)
    shutil.copytree(layout.split, again.split)
    audit.run(PARAMS.model_copy(update={"gallery": 0}), 3, again)
    assert again.label_issues.read_bytes() == layout.label_issues.read_bytes()


def test_more_folds_than_groups_is_refused_with_what_to_do(audited, tmp_path):
    layout, _ = audited
    with pytest.raises(StageError, match=r"audit.folds is 20 .* lower audit.folds"):
        audit.run(PARAMS.model_copy(update={"folds": 20}), 3, _tiny_copy(layout, tmp_path))


def _tiny_copy(layout: Layout, root: Path) -> Layout:
    """The project with train and val cut to a few images, test as it was."""
    small = Layout.under(root)
    shutil.copytree(layout.prepared, small.prepared)
    small.split.mkdir(parents=True)
    for name in ("train", "val", "test"):
        rows = pd.read_csv(layout.split / f"{name}.csv", dtype=str)
        (rows if name == "test" else rows.head(4)).to_csv(small.split / f"{name}.csv", index=False)
    return small


def test_missing_prepared_data_names_the_stage_to_run(tmp_path):
    with pytest.raises(MissingInputError, match="run the prepare stage first"):
        audit.run(PARAMS, 3, Layout.under(tmp_path))
