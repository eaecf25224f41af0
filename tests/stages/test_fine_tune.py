"""Transfer learning: backbone weights from a file, the offline message, two-phase fine-tuning
with its resume across the phase boundary, and a warm start onto another class list."""

import json
import shutil
import urllib.error

import keras
import numpy as np
import pytest

from imgpipe.backbones import WeightsError
from imgpipe.errors import StageError
from imgpipe.layout import Layout
from imgpipe.models import build_model
from imgpipe.params import AugmentParams, FineTune, PrepareParams, SplitParams, TrainParams
from stages import augment, prepare, split, train
from tests.conftest import layout_of, write_class_folders
from tests.stages.test_train import Interrupted, StopAfterEpoch

BACKBONE = "VGG16"  # few layers: quick to trace, so the phased runs take seconds


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A backbone's weights saved in the test, standing in for a downloaded file."""
    keras.utils.set_random_seed(11)
    network = getattr(keras.applications, BACKBONE)(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    path = tmp_path_factory.mktemp("weights") / "backbone.weights.h5"
    network.save_weights(path)
    return path, [w.numpy() for w in network.weights]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Stripes at 32x32, the smallest size the backbone takes; prepared, split, augmented."""
    layout = Layout.under(tmp_path_factory.mktemp("project"))
    write_class_folders(layout.raw, ["a", "b"], per_class=12, size=(32, 32))
    prepare.run(PrepareParams(size=(32, 32), color="rgb", workers=1), layout)
    split.run(SplitParams(val=0.25, test=0.25), 1, layout)
    augment.run(AugmentParams(per_class=0, workers=1), 1, layout)
    return layout


def _backbone(model):
    (network,) = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return network


def _phased(weights_file, epochs=2):
    return TrainParams(
        model=[{"type": "backbone", "name": BACKBONE, "weights": str(weights_file[0])}],
        epochs=epochs,
        batch_size=8,
        lr=0.01,
        fine_tune=FineTune(frozen_epochs=1, lr_factor=0.5),
    )


class BackboneWeights(keras.callbacks.Callback):
    """The backbone's weights after every epoch."""

    def __init__(self):
        super().__init__()
        self.after = []

    def on_epoch_end(self, epoch, logs=None):
        self.after.append([w.numpy() for w in _backbone(self.model).weights])


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_weights_from_a_file_are_the_files_and_grey_images_fit_the_network(weights_file):
    model = build_model(
        [{"type": "backbone", "name": BACKBONE, "weights": str(weights_file[0])}], (32, 32, 1), 2
    )
    assert _same([w.numpy() for w in _backbone(model).weights], weights_file[1])
    pixels = np.full((1, 32, 32, 1), 200, np.uint8)
    assert model.predict(pixels, verbose=0).shape == (1, 2)


def test_offline_imagenet_names_the_file_keras_wanted_and_where_it_goes(monkeypatch, tmp_path):
    import keras.src.utils.file_utils as file_utils

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    spec = [{"type": "backbone", "name": "MobileNetV2", "weights": "imagenet"}]
    with pytest.raises(WeightsError) as caught:
        build_model(spec, (32, 32, 3), 2)
    message = str(caught.value)
    wanted = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    assert f"{tmp_path / 'models' / wanted}" in message
    assert "name resolution" in message and "weights: <path to a weights file>" in message
    with pytest.raises(WeightsError, match=r"weights file '/nowhere\.h5' does not exist"):
        build_model([{**spec[0], "weights": "/nowhere.h5"}], (32, 32, 3), 2)


@pytest.fixture(scope="module")
def phased_run(project, weights_file, tmp_path_factory):
    layout = _moved(project, tmp_path_factory.mktemp("phased"))
    watch = BackboneWeights()
    summary = train.run(_phased(weights_file), 2, layout, extra_callbacks=[watch])
    return layout, summary, watch.after


def _moved(project: Layout, root) -> Layout:
    """Train's own outputs below ``root``, reading the project's data."""
    return layout_of(
        root, prepared=project.prepared, split=project.split, augmented=project.augmented
    )


def test_frozen_phase_keeps_the_backbone_and_the_unfrozen_phase_trains_it(phased_run, weights_file):
    layout, summary, after = phased_run
    assert _same(after[0], weights_file[1])  # epoch 1: frozen, batch norm statistics too
    assert not _same(after[1], weights_file[1])  # epoch 2: unfrozen
    assert summary["history"]["phase"] == [0.0, 1.0]
    logged = (layout.train_live / "plots" / "metrics" / "train" / "phase.tsv").read_text()
    assert [line.split("\t")[1] for line in logged.splitlines()[1:]] == ["0.0", "1.0"]


def test_a_run_killed_at_the_phase_boundary_resumes_into_the_unfrozen_phase(
    phased_run, project, weights_file, tmp_path
):
    layout = _moved(project, tmp_path / "killed")
    with pytest.raises(Interrupted):
        train.run(_phased(weights_file), 2, layout, extra_callbacks=[StopAfterEpoch(1)])
    shutil.rmtree(layout.train_live)  # DVC deletes the outputs before a rerun
    resumed = train.run(_phased(weights_file), 2, layout)
    assert resumed["epochs"] == [1]
    uninterrupted = phased_run[1]["history"]
    assert resumed["history"] == {k: v[1:] for k, v in uninterrupted.items()}


def test_warm_start_keeps_matching_layers_and_gives_a_new_class_list_a_new_head(
    trained_project, tmp_path
):
    from tests.tiny_model import prepared_project

    source = trained_project.model / "model.keras"
    two = prepared_project(tmp_path / "two", ["circle", "square"])
    augment.run(AugmentParams(per_class=0, workers=1), 1, two.layout)
    params = TrainParams(
        epochs=1, batch_size=16, warm_start=str(source), fine_tune=FineTune(frozen_epochs=1)
    )
    train.run(params, 3, two.layout)
    old = keras.models.load_model(source, compile=False)
    new = keras.models.load_model(two.model / "model.keras", compile=False)
    record = json.loads((two.model / "params.json").read_text())["warm_start"]
    old_layers = [layer for layer in old.layers if layer.weights]
    new_layers = [layer for layer in new.layers if layer.weights]
    assert record["fresh"] == [new_layers[-1].name]  # the 3-class head could not be kept
    assert new.output.shape[-1] == 2
    for was, now in zip(old_layers[:-1], new_layers[:-1], strict=True):
        assert _same(was.get_weights(), now.get_weights())  # copied, then frozen for the epoch
    with pytest.raises(StageError, match=r"train.warm_start '/nowhere.keras' is not a file"):
        train.run(params.model_copy(update={"warm_start": "/nowhere.keras"}), 3, two.layout)


def test_a_frozen_phase_without_anything_pretrained_is_refused(trained_project, tmp_path):
    layout = _moved(trained_project.layout, tmp_path)
    params = TrainParams(epochs=2, fine_tune=FineTune(frozen_epochs=1))
    with pytest.raises(StageError, match=r"frozen_epochs needs a pretrained part"):
        train.run(params, 3, layout)
