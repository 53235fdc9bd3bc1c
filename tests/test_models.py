import keras
import numpy as np
import pytest
import tensorflow as tf

from kerascam.models import MODEL_NAMES, ImagePreprocessing, build_model, check_image_size, target_layer_name


def tiny(name, image_size=32, num_classes=3):
    return build_model(name, image_size, num_classes, unet_filters=4)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_logits_shape_and_finite(name):
    model = tiny(name)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    logits = model(images)
    assert logits.shape == (2, 3)
    assert np.all(np.isfinite(logits))
    assert model.name == name
    # Logits, not probabilities: the last layer has no softmax.
    assert model.get_layer("predictions").activation is keras.activations.linear


def test_unet_non_square_batch_and_other_sizes():
    model = build_model("unet", 48, 7, unet_filters=2)
    assert model(np.zeros((3, 48, 48, 3), "float32")).shape == (3, 7)


def test_paper_parameter_counts():
    # keras.applications' own counts: the preprocessing layer adds nothing.
    assert build_model("resnet50").count_params() == 25_636_712
    assert build_model("vgg16").count_params() == 138_357_544
    # Ronneberger's U-Net has 31,031,810 parameters with its 1x1 output conv to
    # 2 classes (64*2 + 2 = 130). The classifier replaces that conv with
    # global average pooling + Dense(1000): 64*1000 + 1000 = 65,000, so
    # 31,031,810 - 130 + 65,000 = 31,096,680.
    assert build_model("unet", batch_norm=False).count_params() == 31_096_680
    # Batch norm: the convs drop their biases (-bias) and gain gamma, beta,
    # mean, variance (+4 per channel), i.e. +3 per channel of the 18 convs.
    channels = 2 * (64 + 128 + 256 + 512) * 2 + 2 * 1024
    assert build_model("unet", batch_norm=True).count_params() == 31_096_680 + 3 * channels
    # Without skips each decoder's first conv sees half the channels:
    # 9 * (512 + 256 + 128 + 64) * (512 + 256 + 128 + 64)... per level 9*f*f fewer.
    fewer = sum(9 * f * f for f in (512, 256, 128, 64))
    assert build_model("unet_ablated", batch_norm=False).count_params() == 31_096_680 - fewer
    # VGG16 with batch norm: same layers, each conv trades its bias for BN's 4.
    vgg_channels = 2 * 64 + 2 * 128 + 3 * 256 + 6 * 512
    assert build_model("vgg16", vgg_batch_norm=True).count_params() == 138_357_544 + 3 * vgg_channels


def test_vgg16_batch_norm_variant_keeps_names_and_declares_its_activation():
    plain, bn = build_model("vgg16", 64, 3), build_model("vgg16", 64, 3, vgg_batch_norm=True)
    conv_names = lambda m: [l.name for l in m.layers if isinstance(l, keras.layers.Conv2D)]  # noqa: E731
    assert conv_names(plain) == conv_names(bn)
    assert target_layer_name(plain) == "block5_conv3"
    assert target_layer_name(bn) == "block5_relu3"
    assert tuple(bn.get_layer("block5_relu3").output.shape[1:]) == (4, 4, 512)


@pytest.mark.parametrize(
    "name, size, expected",
    [("unet", 64, 64), ("unet_ablated", 64, 64), ("resnet50", 64, 2), ("vgg16", 64, 4), ("resnet50", 224, 7)],
)
def test_target_layer_resolution(name, size, expected):
    model = build_model(name, size, 3, unet_filters=4)
    layer = model.get_layer(target_layer_name(model))
    assert tuple(layer.output.shape[1:3]) == (expected, expected)
    # Reachable in the top-level graph: no nested sub-model anywhere.
    assert not any(isinstance(l, keras.Model) for l in model.layers)


def _ancestors(model, layer_name, stop):
    """Names of the layers that feed ``layer_name``, not walking past ``stop``."""
    seen, todo = set(), [model.get_layer(layer_name)]
    while todo:
        layer = todo.pop()
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                parent = tensor._keras_history.operation
                if parent.name not in seen:
                    seen.add(parent.name)
                    if not parent.name.startswith(stop):
                        todo.append(parent)
    return seen


def test_ablated_decoder_sees_encoder_only_through_bottleneck():
    ablated, full = tiny("unet_ablated"), tiny("unet")
    reached = _ancestors(ablated, "dec1_relu2", stop="bottleneck")
    assert not any(name.startswith("enc") for name in reached)
    assert not any("concat" in l.name for l in ablated.layers)
    # The same walk on the U-Net does reach every encoder level directly.
    reached = _ancestors(full, "dec1_relu2", stop="bottleneck")
    assert {f"enc{i}_relu2" for i in range(1, 5)} <= reached
    # Same layer names otherwise: one builder, a flag.
    names = lambda m: {l.name for l in m.layers if "concat" not in l.name}  # noqa: E731
    assert names(ablated) == names(full)


@pytest.mark.parametrize("name, size", [("unet", 40), ("unet", 8), ("resnet50", 16), ("vgg16", 31)])
def test_sizes_a_model_cannot_take(name, size):
    with pytest.raises(ValueError, match=f"Received: image_size={size}"):
        check_image_size(name, size)
    with pytest.raises(ValueError, match=f"image_size={size}"):
        build_model(name, size, 3)


def test_unknown_model_and_weights():
    with pytest.raises(ValueError, match="Choose one of"):
        build_model("resnet18")
    with pytest.raises(ValueError, match="num_classes=1000"):
        build_model("resnet50", 64, 5, weights="imagenet")
    with pytest.raises(ValueError, match="no-such-file"):
        build_model("vgg16", 64, 5, weights="no-such-file.weights.h5")


def test_preprocessing_matches_keras_applications():
    x = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    caffe = ImagePreprocessing("caffe")(x)
    np.testing.assert_allclose(caffe, keras.applications.resnet50.preprocess_input(x.copy()), atol=1e-4)
    np.testing.assert_allclose(ImagePreprocessing("unit")(x), x / 255.0, rtol=1e-6)
    # uint8 input is accepted and gives the same result.
    np.testing.assert_allclose(ImagePreprocessing("unit")(x.astype("uint8")), x.astype("uint8") / 255.0, rtol=1e-6)
    with pytest.raises(ValueError, match="Received: mode='torch'"):
        ImagePreprocessing("torch")


@pytest.mark.parametrize("name", ["resnet50", "unet"])
def test_weights_file_is_loaded(tmp_path, name):
    source = tiny(name)
    path = str(tmp_path / f"{name}.weights.h5")
    source.save_weights(path)
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    keras.utils.set_random_seed(123)  # a different initialization than source's
    loaded = build_model(name, 32, 3, unet_filters=4, weights=path)
    np.testing.assert_allclose(loaded(images), source(images), rtol=1e-5, atol=1e-5)
    fresh = build_model(name, 32, 3, unet_filters=4)
    assert not np.allclose(fresh(images), source(images), atol=1e-3)
