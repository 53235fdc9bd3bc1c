"""Datasets by name. Every source yields the same features:
``image`` (uint8 HxWx3 RGB), ``label`` (int64) and, where known, ``mask``
(uint8 HxW, 1 on the pixels that carry the class evidence).
"""

import dataclasses

DATASETS = ("shapes",)


@dataclasses.dataclass
class Split:
    """One split of a dataset: unbatched examples and what is known of them."""

    examples: "tf.data.Dataset"
    num_examples: int
    num_classes: int
    class_names: tuple


def load_split(config, split):
    """Loads ``split`` ("train" or "validation") of ``config.dataset``.

    Args:
        config: A ``TrainConfig`` (or anything with the same data fields:
            ``dataset``, ``image_size``, ``train_examples``,
            ``validation_examples``). The shapes dataset keeps its own
            default seed: a training ``seed`` changes the run, not the data.
        split: ``"train"`` or ``"validation"``.
    """
    import tensorflow as tf  # here, so that importing kerascam.data stays light

    if config.dataset == "shapes":
        from kerascam.data import synthetic

        shapes = synthetic.ShapesConfig(
            image_size=config.image_size,
            train_examples=config.train_examples,
            validation_examples=config.validation_examples,
        )
        arrays = synthetic.load(shapes, split)
        return Split(
            examples=tf.data.Dataset.from_tensor_slices(arrays),
            num_examples=len(arrays["label"]),
            num_classes=len(shapes.classes),
            class_names=tuple(shapes.classes),
        )
    raise ValueError(f"Unknown dataset {config.dataset!r}. Choose one of: {', '.join(DATASETS)}")
