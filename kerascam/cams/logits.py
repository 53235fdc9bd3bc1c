"""Explaining a classifier that ends in a softmax at its logits.

kerascam's own models output logits, the convention every method here is
written for (see `base.py`). Models brought by users often end in a softmax
instead: keras.applications builds them so by default
(`classifier_activation="softmax"`). Explained as they are, GradCAM would
differentiate a probability instead of a logit, and ScoreCAM would apply its
softmax to probabilities, which squeezes every channel weight towards
1 / classes and flattens the map (tf-keras-vis issue #103; tf-keras-vis asks
its users to clone the model with `ReplaceToLinear` first).

`logits_model` finds such a head and returns a model with the same input
whose output is the logits, built from the model's own layers, so that its
weights are the model's, now and after any later training. The model itself
is never modified or copied. Recognised heads, on the output layer:

* a `Softmax` layer, or an `Activation` layer whose activation is softmax:
  the logits are that layer's input;
* a `Dense` layer with `activation="softmax"`: the logits are its input
  times its kernel plus its bias, computed with the layer's variables.

Any other output is taken to be logits already.
"""

import weakref

import keras

_LOGITS_MODELS = weakref.WeakKeyDictionary()  # model -> its logits model (or itself)


def _is_softmax(activation):
    return activation is keras.activations.softmax


def softmax_head(model):
    """The output layer of `model` when it applies a softmax, else None."""
    layer = model.outputs[0]._keras_history.operation
    if isinstance(layer, keras.layers.Softmax):
        return layer
    if isinstance(layer, (keras.layers.Activation, keras.layers.Dense)) and _is_softmax(layer.activation):
        return layer
    return None


def _logits_of(layer):
    """The symbolic logits that the softmax `layer` turns into probabilities."""
    features = layer.input
    if not isinstance(layer, keras.layers.Dense):
        return features
    # The layer's own variables, read at every call: the logits follow its weights.
    logits = keras.ops.matmul(features, layer.kernel)
    if layer.use_bias:
        logits = logits + layer.bias
    return logits


def logits_model(model):
    """`model` itself when its output is logits, else a model that outputs them.

    Args:
        model: a functional Keras classifier with one input and one output.

    Returns:
        A Keras model with `model`'s input and layers whose output is the
        logits (cached per model; `model` is never modified). Its arg-max
        equals `model`'s and its softmax is `model`'s output.
    """
    if model in _LOGITS_MODELS:
        return _LOGITS_MODELS[model]
    layer = softmax_head(model) if len(model.inputs) == 1 and len(model.outputs) == 1 else None
    if layer is None:
        return model
    # Cached weakly by `model`: the logits model refers to its layers, never to
    # `model` itself, so `model` can still be freed.
    _LOGITS_MODELS[model] = keras.Model(model.inputs[0], _logits_of(layer), name=f"{model.name}_logits")
    return _LOGITS_MODELS[model]
