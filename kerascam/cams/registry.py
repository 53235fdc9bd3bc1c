"""The registry of CAM methods: name -> `BaseCAM` subclass.

A leaf module, so that every other module of `kerascam.cams` can read the
registry without importing the methods: the engine looks a method up here by
name, and the methods import the engine. The package (`kerascam/cams/__init__.py`)
fills `METHODS` once, in the order tables list the methods, right after
importing them; nothing else writes to it.
"""

METHODS = {}  # name -> BaseCAM subclass; filled by kerascam.cams


def register(*method_classes):
    """Adds method classes to `METHODS` under their `name`, in the order given."""
    for method_class in method_classes:
        METHODS[method_class.name] = method_class


def available_methods():
    """The names accepted by `kerascam.cams.explain`, in registry order."""
    return list(METHODS)


def get_method(name):
    """The `BaseCAM` subclass registered under `name` (case-insensitive)."""
    key = name.lower() if isinstance(name, str) else name
    if key not in METHODS:
        raise ValueError(f"Unknown CAM method {name!r}. Valid methods: {available_methods()}")
    return METHODS[key]
