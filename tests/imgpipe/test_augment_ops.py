import random

import numpy as np
import pytest
from Augmentor import Pipeline
from PIL import Image

from imgpipe.augment_ops import (
    AugmentConfigError,
    augment_copies,
    augment_image,
    build_class_operations,
    build_operation,
    operation_arguments,
    operation_names,
    sample_seed,
)
from imgpipe.errors import ParamsError
from imgpipe.params import AugmentOperation, parse_params
from tests.conftest import class_image

# Smallest valid arguments for the operations that need some.
ARGUMENTS = {
    "crop_by_size": {"width": 12, "height": 10},
    "crop_centre": {"percentage_area": 0.7},
    "crop_random": {"percentage_area": 0.7},
    "gaussian_distortion": {
        "grid_width": 4,
        "grid_height": 4,
        "magnitude": 3,
        "corner": "bell",
        "method": "in",
    },
    "random_brightness": {"min_factor": 0.5, "max_factor": 1.5},
    "random_color": {"min_factor": 0.5, "max_factor": 1.5},
    "random_contrast": {"min_factor": 0.5, "max_factor": 1.5},
    "random_distortion": {"grid_width": 4, "grid_height": 4, "magnitude": 3},
    "random_erasing": {"rectangle_area": 0.3},
    "resize": {"width": 30, "height": 20},
    "rotate": {"max_left_rotation": 10, "max_right_rotation": 10},
    "rotate_without_crop": {"max_left_rotation": 10, "max_right_rotation": 10},
    "scale": {"scale_factor": 1.5},
    "shear": {"max_shear_left": 10, "max_shear_right": 10},
    "zoom": {"min_factor": 1.1, "max_factor": 1.5},
    "zoom_random": {"percentage_area": 0.7},
}


def test_every_operation_of_augmentors_pipeline_is_offered():
    names = operation_names()
    pipeline_methods = {
        "rotate",
        "flip_left_right",
        "flip_top_bottom",
        "zoom",
        "shear",
        "skew",
        "random_distortion",
        "gaussian_distortion",
        "crop_random",
        "random_brightness",
        "random_contrast",
        "random_color",
        "random_erasing",
        "greyscale",
        "black_and_white",
        "histogram_equalisation",
        "invert",
        "skew_tilt",
        "scale",
        "resize",
    }
    assert pipeline_methods <= set(names)
    assert "sample" not in names and "ground_truth" not in names
    assert all(callable(getattr(Pipeline, name)) for name in names)
    assert operation_arguments("gaussian_distortion") == (
        ["grid_width", "grid_height", "magnitude", "corner", "method"],
        ["mex", "mey", "sdx", "sdy"],
    )


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("name", operation_names())
def test_each_operation_applies_and_keeps_size_and_mode(name, mode):
    assert set(ARGUMENTS) <= set(operation_names())
    built = build_operation(AugmentOperation(name=name, probability=1, **ARGUMENTS.get(name, {})))
    image = class_image(1, 0, size=(24, 20)).convert(mode)
    result, applied = augment_image(image, [built], seed=3, index=0)
    assert [a.name for a in applied] == [name]
    assert result.size == image.size and result.mode == mode


def test_draws_depend_on_seed_and_index_only():
    image = class_image(0, 0)
    ops = [
        build_operation(AugmentOperation(name=name, probability=0.5, **ARGUMENTS.get(name, {})))
        for name in ("rotate", "random_distortion", "flip_left_right", "zoom")
    ]
    first, applied = augment_image(image, ops, seed=1, index=7)
    random.random(), np.random.random()  # other use of the global generators changes nothing
    again, applied_again = augment_image(image, ops, seed=1, index=7)
    assert first.tobytes() == again.tobytes() and applied == applied_again
    others = {augment_image(image, ops, seed=1, index=i)[0].tobytes() for i in range(8)}
    assert len(others) > 4
    assert augment_image(image, ops, seed=2, index=7)[0].tobytes() != first.tobytes()


def test_augmenting_leaves_the_callers_generators_as_they_were():
    ops = [build_operation(AugmentOperation(name="random_erasing", rectangle_area=0.5))]
    random.seed(5)
    np.random.seed(5)
    expected = random.random(), np.random.random()
    random.seed(5)
    np.random.seed(5)
    augment_copies(class_image(0, 0), ops, seed=99, indices=range(3))
    assert (random.random(), np.random.random()) == expected


def test_copies_of_one_image_equal_samples_made_one_by_one():
    # random_erasing paints into the image it is given: copies must not see each other's paint
    ops = [
        build_operation(AugmentOperation(name="random_erasing", probability=1, rectangle_area=0.4)),
        build_operation(AugmentOperation(name="flip_random", probability=0.5)),
    ]
    image = class_image(1, 3)
    before = image.tobytes()
    batch = augment_copies(image, ops, seed=4, indices=range(10, 16))
    assert image.tobytes() == before
    for index, (result, own_seed, applied) in zip(range(10, 16), batch, strict=True):
        single, single_applied = augment_image(image, ops, seed=4, index=index)
        assert result.tobytes() == single.tobytes() and applied == single_applied
        assert own_seed == sample_seed(4, index)
    assert len({result.tobytes() for result, *_ in batch}) == 6


def test_probability_zero_never_and_one_always_applies():
    never = build_operation(AugmentOperation(name="invert", probability=0))
    always = build_operation(AugmentOperation(name="flip_left_right", probability=1))
    image = class_image(2, 1)
    for index in range(20):
        result, applied = augment_image(image, [never, always], seed=0, index=index)
        assert [a.name for a in applied] == ["flip_left_right"]
        assert result.tobytes() == image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()


def test_argument_errors_list_required_and_optional_arguments():
    with pytest.raises(
        AugmentConfigError,
        match=r"skew does not take angle; it takes probability, magnitude \(optional\)",
    ):
        build_operation(AugmentOperation(name="skew", angle=3))
    with pytest.raises(AugmentConfigError, match=r"random_erasing: .*between 0.01 and 1"):
        build_operation(AugmentOperation(name="random_erasing", rectangle_area=3))


def test_an_override_changes_only_what_it_names():
    params = parse_params(
        {
            "augment": {
                "operations": [
                    {
                        "name": "rotate",
                        "probability": 0.5,
                        "max_left_rotation": 20,
                        "max_right_rotation": 9,
                    },
                    {"name": "flip_top_bottom", "probability": 0.5},
                ],
                "class_overrides": {
                    "b": {"rotate": {"max_left_rotation": 3}, "flip_top_bottom": False},
                    "c": {"flip_top_bottom": {"probability": 1}},
                },
            }
        }
    ).augment
    built = build_class_operations(params.operations, params.class_overrides, ["a", "b", "c"])
    assert [op.name for op in built["a"]] == ["rotate", "flip_top_bottom"]
    assert [op.name for op in built["b"]] == ["rotate"]
    assert dict(built["b"][0].arguments) == {"max_left_rotation": 3, "max_right_rotation": 9}
    assert built["b"][0].probability == 0.5
    assert built["b"][0].operation.max_left_rotation == -3  # Augmentor stores left as negative
    assert built["c"][1].probability == 1 and built["a"][1].probability == 0.5


def test_classes_named_by_numbers_can_be_overridden():
    # digits: a 6 turned upside down reads as a 9
    params = parse_params(
        {
            "augment": {
                "operations": [{"name": "rotate180", "probability": 0.5}],
                "class_overrides": {6: {"rotate180": False}, 9: {"rotate180": False}},
            }
        }
    ).augment
    built = build_class_operations(params.operations, params.class_overrides, ["1", "6", "9"])
    assert [len(built[label]) for label in ("1", "6", "9")] == [1, 0, 0]


def test_params_refuse_two_amounts_repeated_operations_and_true_overrides():
    with pytest.raises(ParamsError, match=r"either per_image .* or per_class"):
        parse_params({"augment": {"per_image": 2, "per_class": 100}})
    with pytest.raises(ParamsError, match=r"operations lists rotate more than once"):
        parse_params({"augment": {"operations": [{"name": "rotate"}, {"name": "rotate"}]}})
    with pytest.raises(ParamsError, match=r"bat.flip_top_bottom: write false to skip"):
        parse_params({"augment": {"class_overrides": {"bat": {"flip_top_bottom": True}}}})
    with pytest.raises(ParamsError, match=r"augment.operations.0.probability"):
        parse_params({"augment": {"operations": [{"name": "rotate", "probability": 1.5}]}})
