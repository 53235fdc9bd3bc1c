"""kerascam: high-resolution explanation maps for CNN image classifiers."""

import sys as _sys

from kerascam import _quiet  # noqa: F401  (must precede any TensorFlow import)

__version__ = "0.1.0"


# Plain `keras.saving.load_model` reads kerascam's `.keras` files once kerascam
# is imported, whichever of kerascam and Keras comes first: the custom layer is
# registered now if Keras is loaded, else right after Keras is, so that
# `import kerascam` itself never imports Keras or TensorFlow.
def _register_keras_objects():
    import kerascam.models.preprocessing  # noqa: F401  (its decorator registers ImagePreprocessing)


class _AfterKerasImport:
    """A `sys.meta_path` finder that registers kerascam's Keras objects once
    `keras` has been imported, then removes itself.

    It wraps the loader of the spec that the other finders give for `keras`;
    only a spec that is executed counts (TensorFlow asks for Keras' spec
    without importing it).
    """

    searching = False

    def find_spec(self, name, path=None, target=None):
        if name != "keras" or self.searching:
            return None
        import importlib.util

        self.searching = True
        try:
            spec = importlib.util.find_spec(name)  # the finders after this one
        finally:
            self.searching = False
        loader = getattr(spec, "loader", None)
        if not hasattr(loader, "exec_module"):
            return spec
        run_keras = loader.exec_module

        def exec_module(module):
            try:
                run_keras(module)
            finally:
                del loader.exec_module  # the loader's own method again
            if self in _sys.meta_path:
                _sys.meta_path.remove(self)
            try:
                _register_keras_objects()
            except Exception as error:  # noqa: BLE001  (never break the user's `import keras`)
                import warnings

                warnings.warn(f"kerascam could not register its Keras layers: {error!r}", stacklevel=2)

        loader.exec_module = exec_module  # this spec's loader only
        return spec


if "keras" in _sys.modules:
    _register_keras_objects()
elif not any(isinstance(finder, _AfterKerasImport) for finder in _sys.meta_path):
    _sys.meta_path.insert(0, _AfterKerasImport())


def __getattr__(name):
    # Lazy: `import kerascam` stays light (no TensorFlow, no matplotlib).
    if name == "overlay":
        from kerascam.figures import overlay

        return overlay
    raise AttributeError(f"module 'kerascam' has no attribute {name!r}")
