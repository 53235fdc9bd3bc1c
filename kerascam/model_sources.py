"""The classifier that ``kerascam explain`` explains: one object per kind of model source.

`load_model(spec)` resolves a name once, in this order: a ``.keras`` file
(loaded in Keras safe mode); a SavedModel folder exported by kerascam with its
explain signatures; a run of the workdir (``WORKDIR/NAME/model.keras`` and the
class names of its ``run.json``); a keras.applications constructor
(``resnet50``, ``mobilenetv2``, ..., case-insensitive;
``keras.applications:NAME`` forces it when a run has the same name), whose
``preprocess_input`` is applied to the pixels before the model (outside it, so
the model stays one flat graph, which the CAM gradients need).

Each kind is a class: `KerasFileSource`, `RunSource` and `ApplicationSource`
hold a Keras model that the CAM methods of `kerascam.cams` explain (Mascolini
et al. 2022 for the U-Nets, the methods' own papers for the rest);
`SavedModelSource` calls the explain signatures it was exported with. Callers
use the methods of `ModelSource` and never ask which kind they hold.
"""

import dataclasses
import importlib
import os

import numpy as np

from kerascam import io

APPLICATION_PREFIX = "keras.applications:"


@dataclasses.dataclass(kw_only=True)
class ModelSource:
    """A classifier to explain, as `load_model` found it: the base of the kinds.

    Attributes:
        kind: a class attribute naming the kind ("keras-file", "run",
            "application", "saved-model"), for people and tests to read.
        name: the model's short name, recorded with every map.
        description: one line saying which model this is and where it came from.
        model: the Keras model (for a SavedModel: the loaded object).
        class_names: names indexed by class, or None (the index is shown).
        input_size: the model's fixed (H, W), or None when it takes any size.
    """

    kind = None  # a class attribute (not a field): each kind sets its own
    name: str
    description: str
    model: object
    class_names: list = None
    input_size: tuple = None

    @property
    def methods(self):
        """The methods this model can be explained with."""
        raise NotImplementedError

    @property
    def num_outputs(self):
        """The number of classes the model scores (None when it is not known)."""
        raise NotImplementedError

    def class_name(self, index):
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return str(int(index))

    def probabilities(self, pixels, batch_size=None):
        """Class probabilities (N, classes) of float32 pixels (N, H, W, 3) in 0-255."""
        raise NotImplementedError

    def check_choices(self, class_mode, target_layer):
        """Raises ValueError in one line for a class choice or layer this model cannot explain.

        Args:
            class_mode: "predicted", "top" or "index" (`kerascam.explain.parse_class_choice`).
            target_layer: the layer asked for, or None.
        """

    def bind_methods(self, methods, target_layer, log):
        """Gets ``methods`` ready for `native_maps`; returns {method: the layer it explains, as text}.

        Args:
            methods: method names, as `kerascam.explain.check_methods` returns them.
            target_layer: the layer to explain, or None for the model's own.
            log: where the line naming the layers goes.
        """
        raise NotImplementedError

    def native_maps(self, method, pixels, classes, *, max_N, batch_size):
        """Raw maps (N, h, w) of ``classes`` at the target layer (fused layers: at input resolution).

        Args:
            method: one of the methods given to `bind_methods`.
            pixels: float32 (N, H, W, 3) in 0-255, at the model's input size.
            classes: int (N,), the class explained for each image.
            max_N: ScoreCAM's channels (Faster-ScoreCAM); None for all.
            batch_size: images per model call.
        """
        raise NotImplementedError

    def note_same_named_application(self, spec):
        """Says in the description that ``spec`` also names a keras.applications model, when it matters.

        Only a run is looked up by a bare name that an application can share.
        """


@dataclasses.dataclass(kw_only=True)
class KerasModelSource(ModelSource):
    """A Keras model, explained by the CAM methods of `kerascam.cams`.

    Attributes:
        preprocess: applied to float32 pixels (N, H, W, 3) in 0-255 before the
            model (keras.applications' ``preprocess_input``); None when the
            model takes raw pixels.
    """

    preprocess: object = None
    # {method: its CAM bound to the model}, set by `bind_methods`
    _bound: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def methods(self):
        from kerascam.cams import available_methods

        return available_methods()

    @property
    def num_outputs(self):
        return self.model.output_shape[-1]

    def inputs(self, pixels):
        """float32 model inputs from float32 pixels in 0-255."""
        pixels = np.asarray(pixels, dtype=np.float32)
        return pixels if self.preprocess is None else np.asarray(self.preprocess(pixels.copy()), np.float32)

    def probabilities(self, pixels, batch_size=None):
        """Class probabilities (N, classes): the softmax of the logits (a softmax head is read at its logits)."""
        import keras

        from kerascam.cams.base import _quiet_model_calls
        from kerascam.cams.logits import logits_model

        network, inputs, step = logits_model(self.model), self.inputs(pixels), batch_size or 32
        with _quiet_model_calls():  # Keras' warning about a single input given as a tensor, not a list
            logits = np.concatenate([np.asarray(network(inputs[i:i + step], training=False), np.float32)
                                     for i in range(0, len(inputs), step)])
        return np.asarray(keras.ops.softmax(logits, axis=-1))

    def bind_methods(self, methods, target_layer, log):
        from kerascam import cams

        self._bound = {method: cams.get_method(method)(self.model, target_layer) for method in methods}
        layers = {method: _layer_text(cam) for method, cam in self._bound.items()}
        log(f"layer: {', '.join(sorted(set(layers.values())))}")
        return layers

    def native_maps(self, method, pixels, classes, *, max_N, batch_size):
        cam = self._bound[method]
        kwargs = {}
        if cam.supports_max_N and max_N and max_N < cam.channels:
            kwargs["max_N"] = max_N
        return cam.compute(self.inputs(pixels), classes, batch_size=batch_size, **kwargs).native


def _layer_text(cam):
    layer = cam.target_layer
    return "+".join(layer) if isinstance(layer, (list, tuple)) else str(layer)


class KerasFileSource(KerasModelSource):
    """A ``.keras`` file given by its path (class names from a ``run.json`` beside it)."""

    kind = "keras-file"


class RunSource(KerasModelSource):
    """A run of the workdir (or a run folder given as a path): its ``model.keras`` and ``run.json``."""

    kind = "run"

    def note_same_named_application(self, spec):
        # The run wins over the application of the same name; the user learns how to get the other.
        if spec.lower() in application_constructors():
            self.description += f"; {APPLICATION_PREFIX}{spec} would take the keras.applications model"


class ApplicationSource(KerasModelSource):
    """A keras.applications classifier with its ``preprocess_input``."""

    kind = "application"


@dataclasses.dataclass(kw_only=True)
class SavedModelSource(ModelSource):
    """A SavedModel exported by kerascam, explained by its ``explain_*`` signatures.

    Attributes:
        signatures: {method: signature}, those it was exported with.
    """

    kind = "saved-model"
    signatures: dict = dataclasses.field(default_factory=dict)

    @property
    def methods(self):
        return list(self.signatures)

    @property
    def num_outputs(self):
        signature = next(iter(self.signatures.values()))
        return signature.structured_outputs["probabilities"].shape[-1]

    def probabilities(self, pixels, batch_size=None):
        signature = next(iter(self.signatures.values()))
        return np.asarray(signature(images=_tensor(pixels))["probabilities"], np.float32)

    def check_choices(self, class_mode, target_layer):
        # The signatures explain the predicted class at the layer they were traced with, nothing else.
        if class_mode != "predicted":
            raise ValueError("--class: a SavedModel explains the predicted class only; use --class predicted "
                             "or the .keras file")
        if target_layer:
            raise ValueError("--target-layer: a SavedModel explains the layer it was exported with; "
                             "use the .keras file for another layer")

    def bind_methods(self, methods, target_layer, log):
        return {method: "as exported" for method in methods}

    def native_maps(self, method, pixels, classes, *, max_N, batch_size):
        outputs = self.signatures[method](images=_tensor(pixels))
        explained = np.asarray(outputs["class"]).astype(np.int64).reshape(-1)
        if not np.array_equal(explained, classes):
            raise ValueError(f"the SavedModel explained classes {explained.tolist()}, expected {classes.tolist()}")
        return np.asarray(outputs["native_map"], np.float32)


def _tensor(pixels):
    import tensorflow as tf

    return tf.constant(np.asarray(pixels, np.float32))


# --- finding the model -----------------------------------------------------------------------------


def application_constructors():
    """{lower-case name: constructor} of every keras.applications model ("resnet50": ResNet50, ...)."""
    import inspect

    import keras

    found = {}
    for attribute in dir(keras.applications):
        value = getattr(keras.applications, attribute)
        if attribute[:1].isupper() and callable(value) and not inspect.ismodule(value):
            found[attribute.lower()] = value
    return found


def _imagenet_class_names():
    """The 1000 ImageNet class names if Keras has cached them (never downloads), else None."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    for folder in (home, os.path.join("/tmp", ".keras")):
        path = os.path.join(folder, "models", "imagenet_class_index.json")
        if os.path.isfile(path):
            try:
                index = io.read_json(path)
                return [index[str(i)][1] for i in range(1000)]
            except (OSError, ValueError, KeyError, IndexError):
                return None
    return None


def load_application(name, weights="imagenet", image_size=None):
    """A keras.applications classifier with its preprocessing, as an `ApplicationSource`.

    Args:
        name: the constructor's name, any case ("resnet50", "MobileNetV2").
        weights: "imagenet" (keras.applications downloads them once into
            ~/.keras), the path of a weights file of the same architecture,
            or None for random weights.
        image_size: side of a square input; None for the architecture's
            default (224 for most, 299 for InceptionV3 and Xception).

    Raises:
        ValueError: in one line, for an unknown name (listing the known
            ones), a missing weights file, or ImageNet weights that cannot be
            downloaded.
    """
    constructors = application_constructors()
    key = name.lower()
    if key not in constructors:
        raise ValueError(f"no keras.applications model named {name!r}; known: {', '.join(sorted(constructors))}")
    constructor = constructors[key]
    if weights not in (None, "imagenet") and not os.path.isfile(weights):
        raise ValueError(f"--weights {weights!r}: no such file (expected imagenet, none or a weights file)")
    from kerascam.training.errors import first_line  # here: kerascam.training is heavy to import

    kwargs = {"input_shape": (image_size, image_size, 3)} if image_size else {}
    try:
        model = constructor(weights=None if weights != "imagenet" else "imagenet", **kwargs)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001  (keras.utils.get_file raises a bare Exception when offline)
        if weights == "imagenet":
            raise ValueError(
                f"could not download the ImageNet weights of {constructor.__name__} ({first_line(e)[:120]}); "
                f"without network, pass a weights file: --weights FILE.weights.h5 (or --weights none for random weights)"
            ) from e
        raise
    if weights not in (None, "imagenet"):
        try:
            model.load_weights(weights)
        except Exception as e:  # noqa: BLE001  (h5py and Keras raise many types)
            raise ValueError(f"--weights {weights!r}: cannot load them into {constructor.__name__}: "
                             f"{first_line(e)}") from e
    family = importlib.import_module(constructor.__module__)
    outputs = model.output_shape[-1]
    class_names = _imagenet_class_names() if outputs == 1000 and weights is not None else None
    shown = {None: "random weights", "imagenet": "ImageNet weights"}.get(weights, f"weights {weights}")
    return ApplicationSource(
        name=key,
        description=f"keras.applications {constructor.__name__} ({shown}, input {_size_text(model)})",
        model=model,
        class_names=class_names,
        preprocess=family.preprocess_input,
        input_size=_fixed_size(model),
    )


def _fixed_size(model):
    height, width = model.input_shape[1:3]
    return (int(height), int(width)) if height and width else None


def _size_text(model):
    size = _fixed_size(model)
    return "any size" if size is None else f"{size[0]}x{size[1]}"


def _keras_source(source_class, path, name, description, class_names):
    from kerascam.export import load_keras

    model = load_keras(path)
    return source_class(name=name, description=f"{description}, input {_size_text(model)}", model=model,
                        class_names=class_names, input_size=_fixed_size(model))


def _run_class_names(run_dir):
    path = os.path.join(run_dir, "run.json")
    if not os.path.isfile(path):
        return None
    try:
        return io.read_json(path).get("class_names")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None


def load_saved_model(path):
    """A SavedModel folder exported with kerascam's explain signatures, as a `SavedModelSource`.

    Raises:
        ValueError: one line when the folder has no ``explain_*`` signatures
            (exported without them) or cannot be loaded.
    """
    from kerascam import backend

    if backend.name() != "tensorflow":
        raise ValueError(f"{path}: a SavedModel is explained on Keras' TensorFlow backend only, but KERAS_BACKEND "
                         f"is {backend.name()!r}; pass the run's .keras file instead")
    import tensorflow as tf

    from kerascam.cams import available_methods
    from kerascam.export import explain_signature_name

    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001  (TensorFlow raises many types here)
        raise ValueError(f"{path}: cannot load the SavedModel ({type(e).__name__})") from e
    signatures = {}
    for method in available_methods():
        key = explain_signature_name(method)
        if key in loaded.signatures:
            signatures[method] = loaded.signatures[key]
    if not signatures:
        raise ValueError(
            f"{path}: this SavedModel was exported without the explain signatures "
            f"(it has: {', '.join(sorted(loaded.signatures)) or 'none'}); export it again with "
            f"kerascam.export.export_saved_model, or pass the .keras file"
        )
    spec = next(iter(signatures.values())).structured_input_signature[1]["images"]
    height, width = spec.shape[1:3]
    parent = os.path.dirname(os.path.abspath(path))
    return SavedModelSource(
        name=os.path.basename(os.path.normpath(path)),
        description=f"SavedModel {path} (methods {', '.join(signatures)}, input "
                    f"{f'{height}x{width}' if height and width else 'any size'})",
        model=loaded,
        class_names=_run_class_names(parent),
        input_size=(int(height), int(width)) if height and width else None,
        signatures=signatures,
    )


def load_model(spec, *, workdir="runs", weights=None, image_size=None):
    """The classifier ``spec`` names, as a `ModelSource` of its kind.

    Looked up in this order: a ``.keras`` file; a SavedModel folder; a run
    ``WORKDIR/SPEC/model.keras`` (or a run folder given as a path); a
    keras.applications name. When a run and an application share the name,
    the run wins and the description says so; ``keras.applications:NAME``
    forces the application.

    Args:
        spec: the file, folder, run or application name.
        workdir: the folder of the runs. Default "runs".
        weights: applications only: "imagenet" (the default when None),
            "none" or a weights file.
        image_size: applications only: the input side (default: the
            architecture's own).

    Raises:
        ValueError: in one line, when nothing matches (naming the runs and
            applications that exist), for a .keras file safe mode refuses
            (a Lambda layer), a SavedModel without explain signatures, or
            --weights/--image-size given for a model that is not an application.
    """
    forced = spec.startswith(APPLICATION_PREFIX)
    name = spec[len(APPLICATION_PREFIX):] if forced else spec
    keyword = str(weights).lower()
    application_weights = {"none": None, "imagenet": "imagenet"}.get(keyword, weights) if weights else "imagenet"
    if not forced:
        source = _load_local(spec, workdir)
        if source is not None:
            if weights is not None or image_size is not None:
                raise ValueError(f"--weights and --image-size apply to keras.applications models, not to {source.description}")
            source.note_same_named_application(spec)
            return source
    try:
        return load_application(name, application_weights, image_size)
    except ValueError as e:
        if forced or not str(e).startswith("no keras.applications model"):
            raise
        runs = list_runs(workdir)
        raise ValueError(
            f"no model {spec!r}: not a .keras file, a SavedModel folder, a run in {workdir!r} "
            f"(runs: {', '.join(runs) or 'none'}) nor a keras.applications name "
            f"(known: {', '.join(sorted(application_constructors()))})"
        ) from None


def _load_local(spec, workdir):
    """A .keras file, SavedModel folder or run that ``spec`` names, or None."""
    if spec.endswith(".keras") or os.path.isfile(spec):
        return _keras_source(KerasFileSource, spec, os.path.splitext(os.path.basename(spec))[0], f"model file {spec}",
                             _run_class_names(os.path.dirname(os.path.abspath(spec))))
    if os.path.isdir(spec) and os.path.isfile(os.path.join(spec, "saved_model.pb")):
        return load_saved_model(spec)
    if os.path.isdir(spec) and os.path.isfile(os.path.join(spec, "model.keras")):  # a run folder given as a path
        path = os.path.join(spec, "model.keras")
        return _keras_source(RunSource, path, os.path.basename(os.path.normpath(spec)), f"run {spec} ({path})",
                             _run_class_names(spec))
    run_dir = os.path.join(workdir, spec)
    if os.sep not in spec and os.path.isfile(os.path.join(run_dir, "model.keras")):
        path = os.path.join(run_dir, "model.keras")
        return _keras_source(RunSource, path, spec, f"run {spec!r} in {workdir} ({path})", _run_class_names(run_dir))
    return None


def list_runs(workdir):
    """Names of the folders of ``workdir`` that hold a ``model.keras``, sorted."""
    if not os.path.isdir(workdir):
        return []
    return sorted(n for n in os.listdir(workdir) if os.path.isfile(os.path.join(workdir, n, "model.keras")))
