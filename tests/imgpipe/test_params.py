import pytest

from imgpipe.errors import ParamsError
from imgpipe.params import load_params, parse_params


def test_defaults_parse_and_committed_params_are_valid():
    params = parse_params({})
    assert params.train.lr == 0.001
    committed = load_params("params.yaml")
    assert committed.download.source == "digits"


def test_numbers_written_as_strings_are_read_as_numbers():
    # `dvc exp run -S train.lr=1e-4` stores a string that YAML 1.1 does not read as a float.
    params = parse_params({"train": {"lr": "1e-4", "epochs": "3"}})
    assert params.train.lr == pytest.approx(1e-4)
    assert params.train.epochs == 3


def test_unknown_key_is_named_with_the_allowed_keys():
    with pytest.raises(ParamsError) as err:
        parse_params({"train": {"lrate": 0.1}})
    message = str(err.value)
    assert "train.lrate: unknown key" in message
    assert "allowed keys: model, lr, epochs" in message


def test_unknown_section_is_named():
    with pytest.raises(ParamsError, match=r"trian: unknown key; allowed keys: base, download"):
        parse_params({"trian": {}})


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"train": {"lr": -1}}, "train.lr"),
        ({"train": {"epochs": "many"}}, "train.epochs"),
        ({"prepare": {"color": "sepia"}}, "prepare.color"),
        ({"prepare": {"size": [0, 32]}}, "prepare.size"),
        ({"split": {"val": 0.6, "test": 0.5}}, "split.test"),
        ({"augment": {"operations": [{"probability": 0.5}]}}, "augment.operations.0.name"),
    ],
)
def test_bad_values_name_the_key(raw, key):
    with pytest.raises(ParamsError, match=rf"{key}: "):
        parse_params(raw)


def test_bad_value_message_says_what_is_allowed():
    with pytest.raises(ParamsError, match=r"'grayscale' or 'rgb'"):
        parse_params({"prepare": {"color": "sepia"}})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ParamsError, match="mapping of sections"):
        load_params(listing)


def test_class_names_that_yaml_reads_as_numbers_are_text():
    params = parse_params(
        {
            "train": {"class_weights": {6: 2.0, "7": 1.5}},
            "evaluate": {"positive_class": 1},
            "augment": {"class_overrides": {6: {"rotate": False}}},
        }
    )
    assert params.train.class_weights == {"6": 2.0, "7": 1.5}
    assert params.evaluate.positive_class == "1"
    assert set(params.augment.class_overrides) == {"6"}


def test_prepare_params_name_every_field_of_the_image_standard():
    from imgpipe.images import Standard
    from imgpipe.params import STANDARD_FIELDS, PrepareParams

    assert {*STANDARD_FIELDS, "width", "height"} == set(Standard.__dataclass_fields__)
    params = PrepareParams(size=(20, 10), fit="pad", fill="#ff0000", luma="bt709", draft=False)
    assert params.standard() == Standard(
        20, 10, fit="pad", fill=(255, 0, 0), luma="bt709", draft=False
    )


def test_a_choice_outside_the_standards_tables_is_refused_with_the_allowed_ones():
    with pytest.raises(ParamsError, match=r"prepare.resample: Input should be 'nearest', 'box'"):
        parse_params({"prepare": {"resample": "cubic"}})


def test_a_single_number_as_size_says_to_write_width_and_height():
    with pytest.raises(
        ParamsError, match=r"prepare.size: .*give width and height as a list, e\.g\. \[64, 64\]"
    ):
        parse_params({"prepare": {"size": 64}})


def test_messages_carry_no_pydantic_prefixes_nor_whole_sections():
    with pytest.raises(ParamsError) as stopped:
        parse_params({"prepare": {"fill": "no-such-colour"}, "download": {"source": "crawl"}})
    message = str(stopped.value)
    assert "prepare.fill: 'no-such-colour' is not a colour name or #rrggbb" in message
    assert "Value error" not in message and "{'source'" not in message
