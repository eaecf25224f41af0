import pytest

from imgpipe.errors import ParamsError
from imgpipe.layers import (
    PRESETS,
    LayerListError,
    check_augmentation,
    check_layers,
    output_shapes,
    resolve,
)
from imgpipe.params import parse_params


def test_defaults_are_written_out_in_the_resolved_list():
    layers = check_layers([{"type": "conv", "filters": 8}, {"type": "max_pool"}])
    assert layers == [
        {
            "type": "conv",
            "filters": 8,
            "kernel": 3,
            "stride": 1,
            "padding": "same",
            "activation": "relu",
        },
        {"type": "max_pool", "size": 2, "stride": None, "padding": "same"},
    ]


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([{"type": "convolution", "filters": 8}], r"layer 1: unknown type 'convolution'; types:"),
        ([{"filters": 8}], r"layer 1 has no 'type'"),
        (
            [{"type": "conv", "filters": 8}, {"type": "res_131"}],
            r"layer 2 \(res_131\): missing 'depths', e.g. depths: \[64, 64, 256\]",
        ),
        ([{"type": "res_131", "depths": [8, 8]}], r"depths must be three filter counts"),
        ([{"type": "conv"}], r"layer 1 \(conv\): missing 'filters'"),
        ([{"type": "conv", "filters": 8, "kernal": 3}], r"unknown argument\(s\) kernal"),
        ([{"type": "conv", "filters": 0}], r"filters must be a whole number of at least 1"),
        ([{"type": "dropout", "rate": 1.5}], r"rate must be a number from 0"),
        ([{"type": "conv", "filters": 8, "padding": "full"}], r"padding must be one of same"),
        ([], r"non-empty list"),
        (["conv"], r"layer 1 must be a mapping"),
    ],
)
def test_bad_layer_lists_name_the_layer_and_the_fix(specs, message):
    with pytest.raises(LayerListError, match=message):
        check_layers(specs)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(LayerListError, match=r"unknown preset 'resnet5'; presets: cifar, conv"):
        resolve("resnet5")


def test_a_backbone_is_checked_by_name_place_and_image_size():
    with pytest.raises(LayerListError, match=r"layer 1 \(backbone\): name must be a keras"):
        resolve([{"type": "backbone", "name": "MobileNetV9"}])
    after_conv = [{"type": "conv", "filters": 4}, {"type": "backbone", "name": "VGG16"}]
    with pytest.raises(LayerListError, match=r"layer 2 \(backbone\) must be the first layer"):
        output_shapes(resolve(after_conv), (32, 32, 3))
    with pytest.raises(
        LayerListError, match=r"at least 71x71.*prepare.size to at least \[71, 71\]"
    ):
        output_shapes(resolve([{"type": "backbone", "name": "Xception"}]), (64, 64, 3))
    shapes = output_shapes(resolve("efficientnet_v2_b0"), (32, 32, 1))
    assert shapes == [(1280,), (1280,)]


def test_params_refuse_a_bad_layer_list_before_training_starts():
    with pytest.raises(ParamsError) as err:
        parse_params({"train": {"model": [{"type": "conv", "filters": 4}, {"type": "res_131"}]}})
    assert "train.model: layer 2 (res_131): missing 'depths'" in str(err.value)
    with pytest.raises(ParamsError, match=r"train.augmentation: .*augmentation 1 \(zoom\)"):
        parse_params({"train": {"augmentation": [{"type": "zoom"}]}})


def test_shapes_follow_convolutions_pools_and_bottlenecks():
    specs = check_layers(
        [
            {"type": "conv", "filters": 8, "kernel": 3, "stride": 2},
            {"type": "res_131", "depths": [4, 4, 16]},
            {"type": "res_131", "depths": [8, 8, 32], "stride": 2},
            {"type": "max_pool", "size": 3, "stride": 1, "padding": "valid"},
            {"type": "flatten"},
            {"type": "dense", "units": 10},
        ]
    )
    assert output_shapes(specs, (32, 24, 3)) == [
        (16, 12, 8),
        (16, 12, 16),
        (8, 6, 32),
        (6, 4, 32),
        (768,),
        (10,),
    ]


def test_a_valid_window_larger_than_the_map_collapses_to_nothing():
    specs = check_layers(
        [
            {"type": "max_pool", "size": 2},
            {"type": "conv", "filters": 4, "kernel": 5, "padding": "valid"},
        ]
    )
    with pytest.raises(LayerListError, match=r"layer 2 \(conv\): a 5x5 window .* no pixels"):
        output_shapes(specs, (8, 8, 1))


def test_downsampling_a_one_pixel_map_is_refused():
    specs = check_layers([{"type": "max_pool", "size": 2}] * 4)
    output_shapes(specs, (16, 16, 1))  # 8, 4, 2, 1: fine
    with pytest.raises(LayerListError, match=r"layer 5 \(max_pool\): downsamples .* 1x1"):
        output_shapes(check_layers([{"type": "max_pool", "size": 2}] * 5), (16, 16, 1))


def test_resnets_fit_32_pixel_images_and_not_smaller_ones():
    for name in ("resnet50", "resnet101"):
        shapes = output_shapes(resolve(name), (32, 32, 3))
        assert shapes[-1] == (2048,)
        with pytest.raises(LayerListError, match=r"too small for this layer list"):
            output_shapes(resolve(name), (16, 16, 3))


def test_feature_map_layers_after_flatten_and_dense_on_maps_are_refused():
    with pytest.raises(LayerListError, match=r"layer 3 \(conv\) needs feature maps"):
        output_shapes(
            check_layers(
                [{"type": "flatten"}, {"type": "dense", "units": 4}, {"type": "conv", "filters": 4}]
            ),
            (8, 8, 1),
        )
    with pytest.raises(LayerListError, match=r"put a flatten or global_avg_pool layer before"):
        output_shapes(check_layers([{"type": "dense", "units": 4}]), (8, 8, 1))


def test_resnet_layouts_have_the_published_block_counts():
    def blocks(name):
        return [(s["depths"][2], s["stride"]) for s in resolve(name) if s["type"] == "res_131"]

    fifty = blocks("resnet50")
    assert [c for c, _ in fifty] == [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert [i for i, (_, stride) in enumerate(fifty) if stride == 2] == [3, 7, 13]
    assert [c for c, _ in blocks("resnet101")].count(1024) == 23
    # 3 convolutions per block plus the stem, plus the classifier: the layer count in the name
    assert 3 * len(fifty) + 2 == 50 and 3 * len(blocks("resnet101")) + 2 == 101


def test_every_preset_passes_its_own_schema():
    for name in PRESETS:
        assert resolve(name)


def test_augmentation_specs():
    assert check_augmentation([{"type": "flip"}, {"type": "rotation", "factor": 0.1}]) == [
        {"type": "flip", "mode": "horizontal"},
        {"type": "rotation", "factor": 0.1},
    ]
    with pytest.raises(LayerListError, match=r"factor must be a number above 0"):
        check_augmentation([{"type": "zoom", "factor": 2}])
