"""The maps of every model x column of the tables, one batch at a time.

A column is a CAM method of `kerascam.cams.METHODS`, a fused variant of one
(``"layercam-fused"``: the method computed at the model's default layer set,
`kerascam.models.fusion_layer_names`, and fused as the LayerCAM paper does),
or a map that knows nothing of the model (`kerascam.evaluation.baselines`).
"""

import functools

import numpy as np

from kerascam import cams, metrics
from kerascam.evaluation.baselines import BASELINES
from kerascam.evaluation.scorer import Explained

FUSED_SUFFIX = "-fused"


def fused_methods():
    """The methods whose fused variant is a column of the experiment."""
    return [name for name, cls in cams.METHODS.items() if getattr(cls, "fused_in_experiment", False)]


def available_columns():
    """Every column, in table order: the CAM methods, the fused variants, the baselines."""
    return [*cams.available_methods(), *(m + FUSED_SUFFIX for m in fused_methods()), *BASELINES]


def check_columns(columns):
    """``columns`` as a list, or ValueError naming the first unknown one."""
    valid = available_columns()
    for column in columns:
        if column not in valid:
            raise ValueError(f"unknown method {column!r}; valid: {', '.join(valid)}")
    if len(set(columns)) != len(columns):
        raise ValueError(f"a method is listed twice: {list(columns)}")
    return list(columns)


def is_baseline(column):
    return column in BASELINES


def explain_column(model, column, images, class_index=None, *, max_N=None, batch_size=None, backend="kerascam"):
    """One column's maps of one model.

    Args:
        model: a Keras classifier (logits out).
        column: a name of `available_columns()`.
        images: (N, H, W, 3) raw pixels.
        class_index: None for the predicted classes, or an int array (N,).
        max_N: ScoreCAM's channel count; ignored by other methods and at or
            above the target layer's channel count.
        batch_size, backend: as `kerascam.cams.explain`.

    Returns:
        ``(maps, native, classes)`` as `kerascam.cams.CAMResult`.
    """
    if is_baseline(column):
        maps = BASELINES[column](images)
        classes = cams.resolve_class_index(model, images, class_index, batch_size)
        return cams.CAMResult(maps, maps, classes)
    target = None
    if column.endswith(FUSED_SUFFIX):
        from kerascam.models import fusion_layer_names

        column = column[: -len(FUSED_SUFFIX)]
        target = fusion_layer_names(model)
    cam = cams.get_method(column)(model, target)
    kwargs = {"max_N": max_N} if cam.supports_max_N and max_N and max_N < cam.channels else {}
    return cam.compute(images, class_index, batch_size=batch_size, backend=backend, **kwargs)


def explain_batch(models, methods, images, labels, class_index="predicted", max_N=None, batch_size=None,
                  backend="kerascam"):
    """Maps of every model x column for one batch.

    Returns:
        ``{(model, column): Explained}`` (whose first three entries are the
        maps (N, H, W) in [0, 1], the native maps and their status) and
        ``{model: predicted classes (N,)}``.
    """
    out, predictions = {}, {}
    # CAM methods first: their forward pass gives the predictions that the
    # baselines then explain.
    ordered = sorted(methods, key=is_baseline)
    for name, model in models.items():
        # Explaining the labels needs a pass of its own for the predictions;
        # otherwise the first method's forward pass gives them (the kerascam
        # engine reads them from its logits) and the other methods explain them.
        predicted = cams.predicted_classes(model, images, batch_size) if class_index == "true" else None
        for column in ordered:
            target = labels if class_index == "true" else predicted
            explain = functools.partial(_explain_again, column=column, max_N=max_N, batch_size=batch_size,
                                        backend=backend)
            result = explain_column(model, column, images, target, max_N=max_N, batch_size=batch_size,
                                    backend=backend)
            if predicted is None:
                predicted = result.classes
            out[(name, column)] = Explained(
                maps=result.maps, native=result.native, status=metrics.map_status(result.native),
                classes=np.asarray(result.classes, np.int64), model_name=name, model=model, method=column,
                explain=explain,
            )
        predictions[name] = predicted
    return {key: out[key] for key in ((n, c) for n in models for c in methods)}, predictions


def _explain_again(model, images, classes, *, column, max_N, batch_size, backend):
    """``Explained.explain``: the same column and settings on another model or images."""
    result = explain_column(model, column, images, classes, max_N=max_N, batch_size=batch_size, backend=backend)
    return result.maps, result.native, metrics.map_status(result.native)
