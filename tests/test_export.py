import keras
import numpy as np
import pytest

from kerascam.export import export_saved_model, load_keras, save_keras
from kerascam.models import build_model


@pytest.fixture()
def model():
    return build_model("unet", 32, 3, unet_filters=2)


def test_save_is_atomic_and_round_trips(tmp_path, model):
    path = tmp_path / "model.keras"
    save_keras(model, path)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(load_keras(path)(images), model(images), rtol=1e-6, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]  # no temporary left behind


def test_failed_save_keeps_the_previous_file(tmp_path, model, monkeypatch):
    path = tmp_path / "model.keras"
    save_keras(model, path)
    before = path.read_bytes()

    def broken_save(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_keras(model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_saved_model_replaces_an_existing_export(tmp_path, model):
    export_saved_model(model, tmp_path / "saved_model")
    export_saved_model(model, tmp_path / "saved_model")
    assert (tmp_path / "saved_model" / "saved_model.pb").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_damaged_model_file_gives_one_clear_error(tmp_path, model, damage):
    path = tmp_path / "model.keras"
    save_keras(model, path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    else:
        path.unlink()
    with pytest.raises(ValueError, match=str(path).replace("\\", "\\\\")) as error:
        load_keras(path)
    assert "\n" not in str(error.value)


def test_lambda_layer_is_refused(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = tmp_path / "untrusted.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="Lambda layer"):
        load_keras(path)
