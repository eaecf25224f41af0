import os

import pytest

from imgpipe.labels import (
    LabelRule,
    archive_root,
    display_name,
    escape_name,
    has_split_folders,
    is_clutter,
    rule_for,
    unescape_name,
)


@pytest.mark.parametrize(
    "rule,path,label",
    [
        (LabelRule(), "cat/1.jpg", "cat"),
        (LabelRule(), "top.jpg", None),
        (LabelRule(), "cat/nested/deeper/1.jpg", "cat"),  # deeper folders are no classes
        (LabelRule(), "a/bmp/b/1.bmp", "a"),
        (LabelRule(root="pets"), "pets/cat/1.jpg", "cat"),
        (LabelRule(root="pets"), "pets/README.txt", None),
        (LabelRule(split_folders=True), "train/cat/x/1.jpg", "cat"),
        (LabelRule(split_folders=True), "Validation/dog/1.jpg", "dog"),
        (LabelRule(split_folders=True), "train/1.jpg", None),
        (LabelRule(split_folders=True), "extra/cat/1.jpg", None),
        (LabelRule(pattern=r"^(cat|dog)\."), "train/dog.123.jpg", "dog"),
        (LabelRule(pattern=r"^(cat|dog)\."), "train/cow.1.jpg", None),
        (LabelRule(pattern=r"^[a-z]+"), "x/bird_01.png", "bird"),  # no group: whole match
        (LabelRule(), "cat/README.txt", "cat"),  # a candidate: prepare decodes it by content
    ],
)
def test_label_rules(rule, path, label):
    assert rule.label(path) == label


def test_split_folders_give_each_file_its_split():
    rule = LabelRule(split_folders=True)
    assert rule.place("train/cat/1.jpg") == ("cat", "train", "")
    assert rule.place("valid/cat/1.jpg") == ("cat", "val", "")
    assert rule.place("test/dog/2.jpg") == ("dog", "test", "")


def test_reasons_name_the_rule_that_failed():
    assert "does not match" in LabelRule(pattern="^x").describe("y.png")
    assert "not inside a class folder" in LabelRule().describe("y.png")
    assert "not inside a split folder" in LabelRule(split_folders=True).describe("x/c/y.png")


def test_rule_round_trips_through_source_json():
    rule = LabelRule(pattern=r"^(a)", root="top", split_folders=True)
    assert LabelRule.from_dict(rule.to_dict()) == rule
    # A rule without root or split folders is recorded as before, byte for byte.
    assert LabelRule().to_dict() == {
        "first_folder": True,
        "image_names_only": False,
        "pattern": None,
    }


@pytest.mark.parametrize(
    "names,root",
    [
        (["pets/cat/1.jpg", "pets/dog/2.jpg", "pets/README.txt"], "pets"),
        (["pets/cat/1.jpg", "__MACOSX/pets/._1.jpg", "pets/.DS_Store"], "pets"),
        (["cat/1.jpg", "dog/2.jpg"], ""),
        (["cat/1.jpg", "cat/2.jpg"], ""),  # one class folder, no sub-folder: not a wrapper
        (["pets/cat/1.jpg", "README.txt"], ""),
    ],
)
def test_archive_root_skips_one_wrapping_folder(names, root):
    assert archive_root(names) == root


def test_split_folders_need_train_and_test():
    assert has_split_folders(["train", "test"])
    assert has_split_folders(["Train", "Valid", "Test"])
    assert not has_split_folders(["train", "val"])
    assert not has_split_folders(["cat", "dog"])
    assert rule_for(None, ["x", "x/train", "x/test", "x/test/cat"], root="x").split_folders


def test_undecodable_names_are_escaped_reversibly():
    name = os.fsdecode(b"caf\xff 100%.png")
    spelled = escape_name(name)
    assert spelled == "caf%FF 100%25.png"
    spelled.encode("utf-8")
    assert unescape_name(spelled) == name
    assert display_name("plain 100%.png") == "plain 100%.png"
    assert display_name(name) == spelled


@pytest.mark.parametrize(
    "path,clutter",
    [
        ("cat/.DS_Store", True),
        ("cat/Thumbs.db", True),
        ("__MACOSX/cat/a.png", True),
        ("cat/._a.png", True),
        ("cat/.hidden/a.png", True),
        ("cat/a.png", False),
    ],
)
def test_operating_system_clutter(path, clutter):
    assert is_clutter(path) is clutter
