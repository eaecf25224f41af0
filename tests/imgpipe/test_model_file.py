import hashlib
import time
import zipfile

import numpy as np

from imgpipe.model_file import FIXED_DATE, save_model


def _model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    model.compile("adam", "mse")
    return model


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_weights_saved_twice_give_the_same_bytes_and_load_back(tmp_path):
    import keras

    model = _model(1)
    save_model(model, tmp_path / "a.keras")
    time.sleep(1.1)  # Keras records the save time to the second, zip dates to two seconds
    save_model(model, tmp_path / "b.keras")
    assert _sha(tmp_path / "a.keras") == _sha(tmp_path / "b.keras")
    with zipfile.ZipFile(tmp_path / "a.keras") as archive:
        assert {info.date_time for info in archive.infolist()} == {FIXED_DATE}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.keras", "b.keras"]  # no leftovers
    loaded = keras.models.load_model(tmp_path / "a.keras")
    pixels = np.random.default_rng(0).random((2, 4, 4, 1)).astype("float32")
    np.testing.assert_array_equal(loaded.predict_on_batch(pixels), model.predict_on_batch(pixels))


def test_shared_objects_are_numbered_in_order_and_stay_shared(tmp_path):
    import json

    import keras

    # Two layers built in one model share its dtype policy: Keras numbers it by id().
    save_model(_model(3), tmp_path / "a.keras")
    with zipfile.ZipFile(tmp_path / "a.keras") as archive:
        config = archive.read("config.json").decode()
    found = [int(n) for n in __import__("re").findall(r'"shared_object_id": (\d+)', config)]
    assert found and set(found) <= set(range(1, len(found) + 1))
    assert keras.models.load_model(tmp_path / "a.keras").count_params() == _model(3).count_params()
    assert json.loads(config)["class_name"] == "Sequential"


def test_other_weights_give_other_bytes(tmp_path):
    save_model(_model(1), tmp_path / "a.keras")
    save_model(_model(2), tmp_path / "b.keras")
    assert _sha(tmp_path / "a.keras") != _sha(tmp_path / "b.keras")
