"""`kerascam.model_sources`: each way of naming a model resolves to the object of its kind, and each kind
answers for itself what tests/test_explain_command.py only sees through the command's output."""

import numpy as np
import pytest

from kerascam import model_sources
from kerascam.explain import _class_columns, explain_files


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A 3-class model as a .keras file, the same as a run (with class names), and a SavedModel with one explain
    signature whose class is the channel of largest mean."""
    import keras
    import tensorflow as tf

    from kerascam.export import save_keras
    from kerascam.io import write_json

    root = tmp_path_factory.mktemp("sources")
    inputs = keras.Input((16, 16, 3))
    features = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="conv")(inputs)
    outputs = keras.layers.Dense(3, name="predictions")(keras.layers.GlobalAveragePooling2D()(features))
    save_keras(keras.Model(inputs, outputs), root / "tiny.keras")
    (root / "runs" / "tiny").mkdir(parents=True)
    save_keras(keras.Model(inputs, outputs), root / "runs" / "tiny" / "model.keras")
    write_json(root / "runs" / "tiny" / "run.json", {"class_names": ["a", "b", "c"]})

    def explain_gradcam(images):
        logits = tf.reduce_mean(images, axis=[1, 2])
        return {"logits": logits, "probabilities": tf.nn.softmax(logits), "class": tf.argmax(logits, axis=-1),
                "native_map": images[:, ::4, ::4, 0]}

    module = tf.Module()
    module.explain_gradcam = tf.function(explain_gradcam, input_signature=[
        tf.TensorSpec((None, 16, 16, 3), tf.float32, name="images")])
    tf.saved_model.save(module, str(root / "saved"), signatures={"explain_gradcam": module.explain_gradcam})
    return root


def test_each_spec_resolves_to_the_object_of_its_kind(places):
    from kerascam.cams import available_methods

    runs = str(places / "runs")
    cases = [
        (str(places / "tiny.keras"), model_sources.KerasFileSource, "tiny", None),
        (str(places / "runs" / "tiny"), model_sources.RunSource, "tiny", ["a", "b", "c"]),  # a run folder as a path
        ("tiny", model_sources.RunSource, "tiny", ["a", "b", "c"]),  # a run of the workdir by name
    ]
    for spec, kind, name, class_names in cases:
        source = model_sources.load_model(spec, workdir=runs)
        assert type(source) is kind and source.name == name and source.class_names == class_names, spec
        assert source.methods == available_methods() and source.num_outputs == 3 and source.input_size == (16, 16)
        assert source.preprocess is None

    saved = model_sources.load_model(str(places / "saved"), workdir=runs)
    assert type(saved) is model_sources.SavedModelSource and saved.kind == "saved-model"
    assert saved.methods == ["gradcam"] and saved.num_outputs == 3 and saved.input_size == (16, 16)

    application = model_sources.load_model("keras.applications:MobileNet", workdir=runs, weights="none",
                                           image_size=32)
    assert type(application) is model_sources.ApplicationSource and application.name == "mobilenet"
    pixels = np.full((1, 32, 32, 3), 255.0, np.float32)
    np.testing.assert_allclose(application.inputs(pixels), 1.0)  # MobileNet's preprocessing: x / 127.5 - 1

    with pytest.raises(ValueError) as error:
        model_sources.load_model(str(places / "nothing"), workdir=runs)
    assert "\n" not in str(error.value) and str(error.value).startswith(f"no model {str(places / 'nothing')!r}: ")
    assert "(runs: tiny)" in str(error.value)


def test_a_saved_model_refuses_what_it_was_not_exported_for_before_writing(places, tmp_path):
    saved = model_sources.load_model(str(places / "saved"))
    out = tmp_path / "never-made"
    with pytest.raises(ValueError, match=r"^--target-layer: a SavedModel explains the layer it was exported with"):
        explain_files(saved, [str(places / "tiny.keras")], methods=["gradcam"], target_layer="conv", out_dir=str(out))
    assert not out.exists()  # refused before the output folder is made or an image read

    pixels = np.zeros((2, 16, 16, 3), np.float32)
    pixels[0, ..., 2] = 9.0  # class 2, the channel of largest mean
    pixels[1, ..., 0] = 9.0  # class 0
    np.testing.assert_array_equal(saved.native_maps("gradcam", pixels, np.array([2, 0]), max_N=None, batch_size=2),
                                  pixels[:, ::4, ::4, 0])
    with pytest.raises(ValueError, match=r"explained classes \[2, 0\], expected \[1, 0\]"):
        saved.native_maps("gradcam", pixels, np.array([1, 0]), max_N=None, batch_size=2)


def test_class_columns_by_hand():
    probabilities = np.array([[0.2, 0.5, 0.3], [0.4, 0.2, 0.4]])
    predicted, = _class_columns(probabilities, "predicted", None)
    np.testing.assert_array_equal(predicted, [1, 0])  # a tie goes to the lower index
    first, second = _class_columns(probabilities, "top", 2)
    np.testing.assert_array_equal(first, [1, 0])
    np.testing.assert_array_equal(second, [2, 2])
    fixed, = _class_columns(probabilities, "index", 2)
    assert fixed.dtype == np.int64 and fixed.tolist() == [2, 2]
