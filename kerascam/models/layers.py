"""Layers of a model by path, nested sub-models included, and a default CAM layer for any model.

Transfer-learning models nest a whole network inside another: a
keras.applications base in a Sequential or functional classifier,
``Sequential([ResNet50(include_top=False), GlobalAveragePooling2D(), Dense(5)])``.
The layers of such a base are not layers of the outer model, so this module
names them by **path**: the names of the nested models that hold the layer,
then its own, joined by ``"/"`` (Keras forbids ``"/"`` in layer names, so a
path is never ambiguous): ``"resnet50/conv5_block3_out"``, or ``"a/b/c"`` at
any depth. A name without ``"/"`` is a layer of the model itself, as always;
one that is not, but names a layer of exactly one nested model (at any depth),
stands for that layer's path (`resolve_layer_path`).

The activations of a nested layer are tensors of the nested model's own graph,
not connected to the outer model's input, so ``keras.Model(model.input,
layer.output)`` cannot reach them. `build_extractor` therefore re-runs the
outer graph on a fresh symbolic input (``keras.models.clone_model`` with every
layer as its own "clone" and a ``call_function`` hook) and, where a path
enters a nested model, calls in its place a model of the nested model's own
layers that also outputs the inner tensors asked for, built the same way on
a fresh input of its own and called with the original call's arguments
(``training=False`` stays in force). So the nested model may sit anywhere in
the outer graph: first, or after preprocessing ops (Keras' transfer-learning
guide: ``x = preprocess_input(inputs); x = base(x, training=False)``),
``Rescaling``, ``Normalization``, augmentation or ``Lambda`` layers, in a
Sequential or functional model, at any depth. A nested model that the graph
calls twice (a shared base) has two sets of activations: it is refused in one
line naming both calls. Every layer object is the model's own: the weights
are shared, nothing is copied, and the model is not modified (Keras records
the new calls as extra nodes of its layers, while a layer's ``output`` stays
that of its first call).

`default_target_layer` finds a CAM target layer for a model that declares
none (see its docstring for the rule); `kerascam.models.target_layer_name`
uses it for every model but the four of the paper.
"""

import math

import keras

SEPARATOR = "/"  # between the names of a layer path

# Layers that only resample or pass on the feature map before them: a CAM is
# taken at the layer that computed the features, not at these.
_NOT_FEATURE_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.ZeroPadding2D,
)
# A global pooling layer starts the classifier head: what follows it is the head.
_GLOBAL_POOLING_LAYERS = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def is_nested_path(path):
    """Whether `path` names a layer inside a nested sub-model ("outer/inner")."""
    return isinstance(path, str) and SEPARATOR in path


def _is_graph_model(layer):
    """Whether `layer` is a nested Sequential or functional model (one with a graph to walk)."""
    if not isinstance(layer, keras.Model):
        return False
    try:
        return bool(layer.outputs)
    except (AttributeError, ValueError):  # a subclassed or unbuilt model has no graph
        return False


def _output_shape(layer):
    """The shape of `layer`'s single output, or None (several outputs, none yet)."""
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return None
    return tuple(output.shape) if hasattr(output, "shape") else None


def _nested_paths_named(model, name, prefix=""):
    """Paths of the layers called `name` inside the nested models of `model`, at any depth."""
    found = []
    for layer in model.layers:
        if not _is_graph_model(layer):
            continue
        inner_prefix = f"{prefix}{layer.name}{SEPARATOR}"
        if name in (inner.name for inner in layer.layers):
            found.append(inner_prefix + name)
        found.extend(_nested_paths_named(layer, name, inner_prefix))
    return found


def _nested_models(model, prefix=""):
    """(path, model) of every nested Sequential or functional model of `model`, at any depth."""
    for layer in model.layers:
        if _is_graph_model(layer):
            path = prefix + layer.name
            yield path, layer
            yield from _nested_models(layer, path + SEPARATOR)


def _describe_layers(model):
    """A short, one-line account of `model`'s layers for an error message: its
    last layers and, for each nested model, the layer a CAM would default to."""
    names = [layer.name for layer in model.layers]
    text = f"Its layers end with: {names[-8:]}"
    nested = []
    for path, inner in _nested_models(model):
        try:
            nested.append(f"{path!r} (last feature layer {path + SEPARATOR + default_target_layer(inner)!r})")
        except ValueError:
            nested.append(f"{path!r} (no 4-D layer)")
    if nested:
        text += f"; nested models, whose layers are named by path: {', '.join(nested)}"
    return text


def resolve_layer_path(model, target_layer):
    """The path of the layer that `target_layer` names in `model`.

    Args:
        model: a Keras model.
        target_layer: a layer of `model` by name (``"conv5_block3_out"``), a
            layer of a nested sub-model by path (``"resnet50/conv5_block3_out"``,
            any depth: ``"a/b/c"``), or the name of a layer that is not one of
            `model`'s own but belongs to exactly one of its nested models.

    Returns:
        `target_layer` itself for a layer of `model` or a valid path; the
        full path for a name found in exactly one nested model.

    Raises:
        ValueError: in one line, saying what was received and which layers
            exist, for a name that is not a layer (or is one in several nested
            models: the paths are listed), or a path through a layer that is
            not a nested model.
    """
    if not isinstance(target_layer, str) or not target_layer:
        raise ValueError(
            f"target_layer must be a layer name or a path 'outer{SEPARATOR}inner'. "
            f"Received: target_layer={target_layer!r} for model {model.name!r}"
        )
    parts = target_layer.split(SEPARATOR)
    if len(parts) == 1:
        if target_layer in (layer.name for layer in model.layers):
            return target_layer
        paths = _nested_paths_named(model, target_layer)
        if len(paths) == 1:
            return paths[0]
        if paths:
            raise ValueError(
                f"target_layer {target_layer!r} is a layer of several nested models of model {model.name!r}; "
                f"pass its path, one of: {paths}"
            )
        raise ValueError(
            f"target_layer {target_layer!r} is not a layer of model {model.name!r}. {_describe_layers(model)}"
        )
    current = model
    for depth, part in enumerate(parts):
        if part not in (layer.name for layer in current.layers):
            where = f"model {model.name!r}" if depth == 0 else f"nested model {SEPARATOR.join(parts[:depth])!r}"
            raise ValueError(
                f"target_layer {target_layer!r}: {part!r} is not a layer of {where}. {_describe_layers(current)}"
            )
        current = current.get_layer(part)
        if depth < len(parts) - 1 and not _is_graph_model(current):
            raise ValueError(
                f"target_layer {target_layer!r}: {SEPARATOR.join(parts[: depth + 1])!r} is a "
                f"{type(current).__name__} layer, not a nested Sequential or functional model, "
                f"so it holds no layer {parts[depth + 1]!r}"
            )
    return target_layer


def get_layer_by_path(model, target_layer):
    """The layer object that `target_layer` (a name or path, see `resolve_layer_path`) names."""
    layer = model
    for part in resolve_layer_path(model, target_layer).split(SEPARATOR):
        layer = layer.get_layer(part)
    return layer


def layer_order_key(model, target_layer):
    """A sort key that orders layers of `model` from input to output, nested ones included.

    The key of a path is the position of each of its layers in its own
    model's `layers` (a topological order of that graph), followed by
    infinity, so that a nested model as a whole comes after every layer
    inside it. For layers of `model` itself the order is that of
    `model.layers`.
    """
    key = []
    current = model
    for part in resolve_layer_path(model, target_layer).split(SEPARATOR):
        names = [layer.name for layer in current.layers]
        key.append(names.index(part))
        current = current.layers[key[-1]]
    return (*key, math.inf)


def _flattened_layers(model, prefix=""):
    """(path, layer) of every layer of `model` in order, each nested model
    replaced by its own layers (depth first)."""
    for layer in model.layers:
        if _is_graph_model(layer):
            yield from _flattened_layers(layer, f"{prefix}{layer.name}{SEPARATOR}")
        else:
            yield prefix + layer.name, layer


def _is_feature_map(layer):
    shape = _output_shape(layer)
    return shape is not None and len(shape) == 4 and not isinstance(layer, _NOT_FEATURE_LAYERS)


def default_target_layer(model):
    """A CAM target layer for any model: the last feature map before the classifier head.

    The rule is tf-keras-vis' search (`tf_keras_vis.utils.find_layer`, which
    walks `model.layers` backwards and into nested models), with a different
    condition: tf-keras-vis takes the last `Conv` layer, which in a ResNet
    comes before the batch norm, the residual addition and the ReLU; kerascam
    takes the last layer whose output is 4-D (N, h, w, channels), i.e. the
    features the head actually receives (ResNet50: ``conv5_block3_out``,
    MobileNetV2: ``out_relu``, VGG16: ``block5_conv3``). Precisely:

    * layers are taken in `model.layers` order, each nested Sequential or
      functional model replaced by its own layers, at any depth;
    * the classifier head starts at the last global pooling layer
      (`GlobalAveragePooling2D`, `GlobalMaxPooling2D`), or is the end of the
      model when there is none (a Flatten head);
    * the target is the last layer before the head with a 4-D output that is
      not an input, a pooling (`MaxPooling2D`, `AveragePooling2D`) or a
      zero-padding layer: those only resample the map before them.

    Args:
        model: a Keras model.

    Returns:
        The layer's name, or its path (``"outer/inner"``) in a nested model.

    Raises:
        ValueError: in one line, when no layer qualifies.
    """
    layers = list(_flattened_layers(model))
    head = max((i for i, (_, layer) in enumerate(layers) if isinstance(layer, _GLOBAL_POOLING_LAYERS)), default=None)
    for path, layer in reversed(layers[:head]):
        if _is_feature_map(layer):
            return path
    raise ValueError(
        f"Model {model.name!r} has no layer with a 4-D output (N, h, w, channels) before its classifier head "
        "to take a CAM at; pass target_layer=... explicitly."
    )


class _Tap:
    """What to keep from one layer while a graph is re-run: its own output
    (`keep`), and/or layers inside it (`inner`, when it is a nested model)."""

    def __init__(self, layer):
        self.layer = layer
        self.keep = False
        self.inner = {}  # id(layer) -> _Tap, for the layers of a nested model
        self.called = False


def _check_single_input_and_output(model, path):
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"The layers of a nested model are reached only through a model with one input and one output; "
            f"{path!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs."
        )


def _taps(model, paths):
    """The tree of `_Tap`s for `paths` (resolved paths of `model`)."""
    root = {}
    for path in paths:
        level, current = root, model
        parts = path.split(SEPARATOR)
        for depth, part in enumerate(parts):
            layer = current.get_layer(part)
            tap = level.setdefault(id(layer), _Tap(layer))
            if depth == len(parts) - 1:
                tap.keep = True
            else:
                _check_single_input_and_output(layer, SEPARATOR.join(parts[: depth + 1]))
                level, current = tap.inner, layer
    return root


def _describe_call(args):
    """Where a layer was called, for an error message: the layer its input came from."""
    tensors = [t for t in keras.tree.flatten(args) if hasattr(t, "_keras_history")]
    sources = [t._keras_history.operation.name for t in tensors]
    return f"on the output of {', '.join(map(repr, sources))}" if sources else "on no tensor"


def _kept_outputs(taps, prefix=""):
    """(path, the layer's output in its own model's graph) of every layer `taps` keeps, at any depth."""
    for tap in taps.values():
        if tap.keep:
            yield prefix + tap.layer.name, tap.layer.output
        yield from _kept_outputs(tap.inner, f"{prefix}{tap.layer.name}{SEPARATOR}")


def _perturbation_inputs(taps):
    """A fresh symbolic input per kept layer, shaped like its output, to be added to it (see `build_extractor`)."""
    return {
        path: keras.Input(batch_shape=tuple(output.shape), dtype=output.dtype)
        for path, output in _kept_outputs(taps)
    }


def _run_tapped(model, inputs, taps, perturbations=None):
    """Calls `model`'s graph on the symbolic `inputs`, keeping what `taps` asks for.

    `perturbations`, if given, maps the path of every layer `taps` keeps to
    a symbolic input that is added to its output before the graph goes on
    from it (`_perturbation_inputs`).

    Returns:
        (outputs, kept): `model`'s single output tensor on `inputs`, and a
        dict from each kept layer's path (relative to `model`) to its tensor.
    """
    kept = {}

    def call(operation, *args, **kwargs):
        tap = taps.get(id(operation))
        if tap is None:
            return operation(*args, **kwargs)
        where = _describe_call(args)
        if tap.called:
            # A shared layer (a base applied to two inputs, as in a siamese model)
            # has one activation per call: which one to explain is not ours to guess.
            kind, activations = ("Nested model", "of its layers") if tap.inner else ("Layer", "")
            raise ValueError(
                f"{kind} {operation.name!r} is called twice in model {model.name!r} (first {tap.called}, "
                f"then {where}), so the activations {activations or 'it outputs'} are ambiguous; explain a "
                "model that calls it once."
            )
        tap.called = where
        if tap.inner:
            # The nested model is replaced by a model of the same layers that also
            # outputs the inner tensors asked for, called like the original with the
            # same arguments (training=False stays in force). Building that model on a
            # fresh input of its own, rather than re-running the nested graph on the
            # tensor that reaches it, keeps each level a graph from an Input, which is
            # what Keras requires of a model: the nested model may then sit anywhere,
            # after preprocessing, normalisation or augmentation layers.
            (inner_input,) = keras.tree.flatten(args[0])
            tapped, inner_paths = _tapped_model(operation, tap.inner, perturbed=perturbations is not None)
            inner_paths = [f"{operation.name}{SEPARATOR}{path}" for path in inner_paths]
            if perturbations is not None:
                # The nested model's perturbations are inputs of this level.
                inner_input = [inner_input, *(perturbations[path] for path in inner_paths)]
            outputs, *tensors = tapped(inner_input, *args[1:], **kwargs)
            kept.update(zip(inner_paths, tensors))
        else:
            outputs = operation(*args, **kwargs)
        if tap.keep:
            if perturbations is not None:
                outputs = keras.ops.add(outputs, perturbations[operation.name])
            kept[operation.name] = outputs
        return outputs

    # A functional view of the model's own graph (a Sequential has one too); its
    # "clone" reuses every layer and calls each through `call`.
    graph = keras.Model(model.inputs, model.outputs)
    input_tensors = keras.tree.pack_sequence_as(graph.input, [inputs])
    if perturbations is not None:
        # The perturbations must be inputs of the re-run graph: the functional
        # view gets stand-ins for them, which its graph does not use.
        stand_ins = [keras.Input(batch_shape=t.shape, dtype=t.dtype) for t in perturbations.values()]
        graph = keras.Model([*model.inputs, *stand_ins], model.outputs)
        input_tensors = [inputs, *perturbations.values()]
    rerun = keras.models.clone_model(
        graph, input_tensors=input_tensors, clone_function=lambda layer: layer, call_function=call
    )
    for tap in taps.values():
        if not tap.called:  # e.g. a layer outside the path from the input to the output
            raise ValueError(f"Layer {tap.layer.name!r} of model {model.name!r} is not on the path to its output.")
    return rerun.outputs[0], kept


def _tapped_model(model, taps, perturbed=False):
    """A model of `model`'s own layers from a fresh input to [its output, kept tensors...].

    With `perturbed`, the model takes [input, perturbations of the kept
    tensors...] (in the order of the kept paths), each added to its tensor.

    Returns:
        (tapped model, the kept layers' paths relative to `model`, in the
        order of the model's outputs after the first).
    """
    source = model.inputs[0]
    # Named as the model's own input, so that errors name the layers the user knows.
    name = source._keras_history.operation.name
    inputs = keras.Input(batch_shape=tuple(source.shape), dtype=source.dtype, name=name)
    perturbations = _perturbation_inputs(taps) if perturbed else None
    outputs, kept = _run_tapped(model, inputs, taps, perturbations)
    paths = list(kept)
    if perturbed:
        inputs = [inputs, *(perturbations[path] for path in paths)]
    return keras.Model(inputs, [outputs, *(kept[path] for path in paths)], name=model.name), paths


def build_extractor(model, target_layers, name=None, perturbed=False):
    """A model from `model`'s input to [activations of each target layer..., `model`'s output].

    Layers of nested models are reached by re-running the graph (see the
    module docstring); when every target is a layer of `model` itself the
    extractor is built from the model's own tensors, as
    ``keras.Model(model.inputs[0], [layer.output..., model.outputs[0]])``.
    Either way the extractor's layers and weights are `model`'s own, and
    `model` is not modified.

    Args:
        model: a Sequential or functional Keras model with one input and one
            output.
        target_layers: names or paths of layers of `model` (see
            `resolve_layer_path`).
        name: the extractor's name; None for Keras' default.
        perturbed: also take one input per target layer, shaped like its
            activations, that is added to them before the graph goes on from
            them: the gradient of the output with respect to that input is
            its gradient with respect to the activations, which is how an
            engine on Keras' JAX backend differentiates back to a layer
            (`kerascam.cams.jax_engine`; ``jax.grad`` differentiates inputs,
            not intermediate tensors). The graph is then always re-run.

    Returns:
        A functional `keras.Model` taking the single input tensor (not a
        one-element list), or with `perturbed` the list [input,
        perturbation of each target layer...], and returning a list of
        len(target_layers) + 1 tensors (the activations perturbed, if so).

    Raises:
        ValueError: in one line, for a path through a nested model that the
            graph calls more than once (naming both calls) or that has
            several inputs or outputs.
    """
    _check_single_input_and_output(model, model.name)
    paths = [resolve_layer_path(model, layer) for layer in target_layers]
    if not perturbed and not any(is_nested_path(path) for path in paths):
        activations = [model.get_layer(path).output for path in paths]
        return keras.Model(model.inputs[0], [*activations, model.outputs[0]], name=name)
    tapped, kept_paths = _tapped_model(model, _taps(model, paths), perturbed)
    outputs, *tensors = tapped.outputs
    kept = dict(zip(kept_paths, tensors))
    activations = [kept[path] for path in paths]
    if not perturbed:
        return keras.Model(tapped.inputs[0], [*activations, outputs], name=name)
    # The tapped model's perturbations come in the order of its kept paths.
    perturbations = dict(zip(kept_paths, tapped.inputs[1:]))
    return keras.Model([tapped.inputs[0], *(perturbations[path] for path in paths)], [*activations, outputs], name=name)


__all__ = [
    "SEPARATOR",
    "build_extractor",
    "default_target_layer",
    "get_layer_by_path",
    "is_nested_path",
    "layer_order_key",
    "resolve_layer_path",
]
