import pytest
import yaml

from imgpipe.augment_ops import AugmentConfigError
from imgpipe.errors import ParamsError
from stages import validate
from tests.conftest import layout_of


def _write(layout, params: dict) -> None:
    layout.params.write_text(yaml.safe_dump(params), encoding="utf-8")


def test_valid_params_of_any_value_write_the_same_bytes(tmp_path):
    layout = layout_of(tmp_path)
    _write(layout, {"train": {"lr": 0.1}})
    validate.run(layout)
    first = layout.params_checked.read_bytes()
    _write(layout, {"train": {"lr": 0.2}, "prepare": {"workers": 1}})
    summary = validate.run(layout)
    # The same bytes, so a change that passes reruns only the stages whose params changed.
    assert layout.params_checked.read_bytes() == first
    assert "augment" in summary["sections"]


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"trian": {"lr": 0.1}}, ParamsError, r"trian: unknown key"),
        ({"prepare": {"sizee": [8, 8]}}, ParamsError, r"prepare\.sizee: unknown key"),
        ({"prepare": {"workers": -1}}, ParamsError, r"prepare\.workers"),
        (
            {"augment": {"operations": [{"name": "rotat"}]}},
            AugmentConfigError,
            r"unknown operation 'rotat'; valid operations: .*rotate",
        ),
        (
            {"augment": {"operations": [{"name": "zoom", "min_factor": 1.1}]}},
            AugmentConfigError,
            r"zoom needs max_factor",
        ),
        (
            {
                "augment": {
                    "operations": [{"name": "rotate90"}],
                    "class_overrides": {"cat": {"rotate90": {"angle": 3}}},
                }
            },
            AugmentConfigError,
            r"class_overrides\.cat: rotate90 does not take angle",
        ),
    ],
)
def test_a_mistake_anywhere_stops_before_any_stage_and_writes_nothing(
    tmp_path, params, error, message
):
    layout = layout_of(tmp_path)
    _write(layout, params)
    with pytest.raises(error, match=message):
        validate.run(layout)
    assert not layout.params_checked.exists()
