"""Validation accuracy against training CPU time for one training recipe.

    python benchmarks/recipe_curve.py vgg16 --set mixed_precision=mixed_bfloat16
    python benchmarks/recipe_curve.py resnet50 --set epochs=2 --set learning_rate=3e-4 --set warmup_epochs=0.2
    python benchmarks/recipe_curve.py unet --set epochs=3 --set low_resolution_epochs=2 --set low_resolution_size=32
    python benchmarks/recipe_curve.py unet --preset markers --data cell_size=2 --threads 1

How fast does a recipe reach a validation accuracy, in CPU seconds of train
steps? The demo preset's config for MODEL, with ``--set FIELD=VALUE``
overrides of any ``TrainConfig`` field (JSON values, or bare strings), is
trained with the train step of ``kerascam.training`` (same seed, data order,
augmentation and schedule as ``train.py``; progressive resizing through
``kerascam.progressive``), and validated ``--checks`` times per epoch on the
full validation split at the model's own size. Each line gives the epoch,
the side trained at, the running training loss and accuracy of the epoch,
the validation accuracy and the CPU time (user + system of this process) of
the train steps so far, validation excluded. Nothing is written but the
optional ``--json`` file: a search over recipes, not a run to keep.
``--data FIELD=VALUE`` changes a field of the markers dataset
(``kerascam.data.markers.MarkersConfig``: ``cell_size``,
``small_marker_fraction``, ...), to try a design of the testbed before it
becomes the default; ``--threads`` caps TensorFlow's threads (one thread
beside other work gives CPU times that compare).

The numbers that chose the demo's recipe (and the levers that did not pay)
are in ``benchmarks/README.md``.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignment(item):
    field, _, value = item.partition("=")
    return field, parse_value(value)


def load_splits(config, data_overrides):
    """The train and validation splits of ``config``'s dataset, the markers' fields changed by ``data_overrides``."""
    from kerascam import data

    if not data_overrides:
        return data.load_split(config, "train"), data.load_split(config, "validation")
    from kerascam.data import markers

    design = markers.MarkersConfig(image_size=config.image_size, train_examples=config.train_examples,
                                   validation_examples=config.validation_examples, **data_overrides)
    return tuple(data._embedded_split(markers, design, split) for split in ("train", "validation"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=["unet", "unet_ablated", "resnet50", "vgg16"])
    p.add_argument("--preset", default="demo")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a TrainConfig field")
    p.add_argument("--zero-residual-gamma", action="store_true",
                   help="ResNet50: start each residual branch's last batch-norm scale at 0 (Goyal et al. 2017)")
    p.add_argument("--data", action="append", default=[], metavar="FIELD=VALUE",
                   help="a field of the markers dataset (kerascam.data.markers.MarkersConfig)")
    p.add_argument("--threads", type=int, help="TensorFlow threads (default: TensorFlow's)")
    p.add_argument("--checks", type=int, default=4, help="validations per epoch (default 4)")
    p.add_argument("--json", help="write the curve here")
    args = p.parse_args(argv)

    import keras
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    from kerascam import configs, progressive, training
    from kerascam.data import pipeline

    overrides, data_overrides = (dict(parse_assignment(item) for item in items) for items in (args.set, args.data))
    config = configs.get_preset(args.preset).for_model(args.model, **overrides)
    if data_overrides and config.dataset != "markers":
        p.error(f"--data changes the markers dataset; this recipe trains on {config.dataset!r}")
    progressive.check_config(config)
    train_split, val_split = load_splits(config, data_overrides)
    steps = train_split.num_examples // config.batch_size
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
    strategy = tf.distribute.get_strategy()
    keras.utils.set_random_seed(config.seed)
    with training.dtype_policy(config.mixed_precision):
        model = training.build_model_for(config, train_split.num_classes)
    if args.zero_residual_gamma:
        for layer in model.layers:
            if "_block" in layer.name and layer.name.endswith("_3_bn"):
                layer.gamma.assign(tf.zeros_like(layer.gamma))
    optimizer = training.make_optimizer(config, steps)
    optimizer.build(model.trainable_variables)
    train_steps = training.make_train_steps(config, model, optimizer, strategy, num_classes=train_split.num_classes,
                                            global_batch=config.batch_size)

    @tf.function(reduce_retracing=True)
    def correct(images, labels):
        logits = model(tf.cast(images, tf.float32), training=False)
        return tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == labels, tf.float32))

    def validate():
        hits = total = 0
        for batch in pipeline.evaluation_batches(val_split.examples, 100):
            hits += float(correct(batch["image"], batch["label"]))
            total += len(batch["label"])
        return hits / total

    check_at = {round(steps * (i + 1) / args.checks) for i in range(args.checks)}
    curve, train_cpu = [], 0.0
    print(f"{args.model}: {overrides or 'the preset'}{f', data {data_overrides}' if data_overrides else ''}, "
          f"{steps} steps per epoch", flush=True)
    for epoch in range(config.epochs):
        side = progressive.side_of_epoch(config, epoch)
        batches = pipeline.training_batches(train_split.examples, config.batch_size, epoch=epoch, seed=config.seed,
                                            augment=config.augment).take(steps)
        if side != config.image_size:
            batches = progressive.downscale(batches, side)
        loss_sum = correct_sum = 0.0
        started = time.process_time()
        for done, batch in enumerate(batches, start=1):
            loss, hits = (float(v) for v in train_steps[side](batch))
            loss_sum, correct_sum = loss_sum + loss, correct_sum + hits
            if done in check_at:
                train_cpu += time.process_time() - started
                point = {"epoch": round(epoch + done / steps, 3), "side": side, "loss": loss_sum / done,
                         "accuracy": correct_sum / (done * config.batch_size), "val_accuracy": validate(),
                         "train_cpu_seconds": train_cpu}
                curve.append(point)
                print(f"  epoch {point['epoch']:.2f} at {side}x{side}: loss {point['loss']:.3f} accuracy "
                      f"{point['accuracy']:.3f} val_accuracy {point['val_accuracy']:.3f} "
                      f"train CPU {train_cpu:.0f} s", flush=True)
                started = time.process_time()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "preset": args.preset, "overrides": overrides, "data": data_overrides,
                       "zero_residual_gamma": args.zero_residual_gamma, "curve": curve}, f, indent=1)


if __name__ == "__main__":
    main()
