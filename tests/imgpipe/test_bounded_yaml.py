import pytest
import yaml

from imgpipe import bounded_yaml
from imgpipe.errors import ParamsError


def laughs(levels: int, width: int = 10) -> str:
    """The "billion laughs" document: each anchor a list of ``width`` aliases of the last."""
    lines = ["l0: &l0 [lol]"]
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_is_refused_before_it_is_built():
    with pytest.raises(ParamsError, match=r"p\.yaml expands to more than 100,000 values"):
        bounded_yaml.load(laughs(9), "p.yaml")


def test_aliases_within_the_bound_load_as_safe_load_loads_them():
    text = laughs(3) + "train:\n  defaults: &d {lr: 0.1, epochs: 2}\n  other: *d\n"
    assert bounded_yaml.load(text, "p.yaml") == yaml.safe_load(text)
    # every leaf and list below l3 counted once per use, not once per anchor
    node = yaml.compose(laughs(3), Loader=yaml.SafeLoader)
    assert bounded_yaml.expanded_size(node, "p.yaml") > 1000 + 100 + 10


def test_the_bound_counts_every_use_of_a_shared_node():
    text = laughs(4)  # about 11,000 values written out, 50 written down
    assert bounded_yaml.load(text, "p.yaml")["l4"][9][9][9][9] == ["lol"]
    with pytest.raises(ParamsError, match="more than 1,000 values"):
        bounded_yaml.expanded_size(yaml.compose(text, Loader=yaml.SafeLoader), "p.yaml", 1000)


def test_an_anchor_holding_itself_is_refused():
    with pytest.raises(ParamsError, match="contains an alias of itself"):
        bounded_yaml.load("base: &x {seed: [*x]}\n", "p.yaml")


def test_an_oversized_file_and_an_empty_one():
    with pytest.raises(ParamsError, match="over 1024 kB"):
        bounded_yaml.load("a: " + "x" * bounded_yaml.MAX_BYTES, "p.yaml")
    assert bounded_yaml.load("", "p.yaml") is None
    assert bounded_yaml.load("# only a comment\n", "p.yaml") is None
