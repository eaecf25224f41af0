import pytest

from imgpipe.labels import LabelRule, is_clutter


@pytest.mark.parametrize(
    "rule,path,label",
    [
        (LabelRule(), "pets/cat/1.jpg", "cat"),
        (LabelRule(), "top.jpg", None),
        (LabelRule(first_folder=True), "cat/nested/deeper/1.jpg", "cat"),
        (LabelRule(pattern=r"^(cat|dog)\."), "train/dog.123.jpg", "dog"),
        (LabelRule(pattern=r"^(cat|dog)\."), "train/cow.1.jpg", None),
        (LabelRule(pattern=r"^[a-z]+"), "x/bird_01.png", "bird"),  # no group: whole match
        (LabelRule(image_names_only=True), "pets/README.txt", None),
        (LabelRule(image_names_only=True), "pets/cat/1.JPEG", "cat"),
    ],
)
def test_label_rules(rule, path, label):
    assert rule.label(path) == label


def test_reasons_name_the_rule_that_failed():
    assert "does not match" in LabelRule(pattern="^x").describe("y.png")
    assert "not inside a class folder" in LabelRule().describe("y.png")
    assert "does not end like an image" in LabelRule(image_names_only=True).describe("a/b.txt")


def test_rule_round_trips_through_source_json():
    rule = LabelRule(pattern=r"^(a)", first_folder=True, image_names_only=True)
    assert LabelRule.from_dict(rule.to_dict()) == rule


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
