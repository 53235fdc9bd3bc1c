"""CPU seconds per image of the model scores (ROAD, deletion/insertion, randomization) in `evaluate.py --cam all`.

Builds the demo's four models (48x48, 5 classes, U-Net filters 16, VGG16
with batch norm) with random weights, or loads trained ones (``--workdir``),
explains ``--images`` shapes images with every column, and times each
scorer's ``begin_batch`` + ``score`` over every model x column, as the
experiment runs them::

    python benchmarks/score_cost.py --images 4
    python benchmarks/score_cost.py --workdir /work/runs0 --images 10 --scores road

Prints per scorer: CPU seconds (``time.process_time``, all threads) and wall
seconds per image (all models x columns together), and the explaining's.
"""

import argparse
import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--workdir", default=None, help="trained runs (WORKDIR/MODEL/model.keras); default random")
    parser.add_argument("--scores", nargs="+", default=["road", "faithfulness", "randomization"])
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--max-n", type=int, default=32)
    parser.add_argument("--tie-draws", type=int, default=3)
    args = parser.parse_args(argv)

    import numpy as np

    from kerascam import evaluation
    from kerascam.data import synthetic
    from kerascam.evaluation.scorer import Batch
    from kerascam.models import MODEL_NAMES, build_model

    names = args.models or list(MODEL_NAMES)
    if args.workdir:
        runs = evaluation.find_models(args.workdir, names)
        models = {name: model for name, (model, _) in runs.items()}
    else:
        import keras

        keras.utils.set_random_seed(0)
        models = {name: build_model(name, 48, 5, unet_filters=16, vgg_batch_norm=True) for name in names}
    data = synthetic.generate(synthetic.ShapesConfig(image_size=48), "validation")
    n = args.images
    masks = data["mask"][:n] if "mask" in data else None
    batch = Batch(np.arange(n), data["image"][:n].astype(np.float32), data["label"][:n].astype(np.int64), masks)
    config = evaluation.EvalConfig(scores=args.scores, max_N=args.max_n, tie_draws=args.tie_draws)
    scorers = evaluation.scorer.get_scorers(args.scores, config)
    columns = evaluation.available_columns()
    # Warm-up: trace every compiled function once on one image.
    cpu, wall = time.process_time(), time.perf_counter()
    explained, _ = evaluation.explain_batch(models, columns, batch.images, batch.labels, max_N=args.max_n)
    seconds = {"explain": (time.process_time() - cpu, time.perf_counter() - wall)}
    first = batch.take([0])
    for scorer in scorers:
        scorer.begin_batch(first, {k: v.take([0]) for k, v in explained.items()})
        for one in explained.values():
            scorer.score(first, one.take([0]))
    by_model = collections.defaultdict(float)
    for scorer in scorers:
        cpu, wall = time.process_time(), time.perf_counter()
        scorer.begin_batch(batch, explained)
        for (model, column), one in explained.items():
            tic = time.process_time()
            scorer.score(batch, one)
            by_model[f"{scorer.name}/{model}"] += time.process_time() - tic
        seconds[scorer.name] = (time.process_time() - cpu, time.perf_counter() - wall)
    out = {
        "images": n, "columns": columns, "models": names,
        "cpu_s_per_image": {k: round(c / n, 3) for k, (c, _) in seconds.items()},
        "wall_s_per_image": {k: round(w / n, 3) for k, (_, w) in seconds.items()},
        "cpu_s_per_image_by_model": {k: round(v / n, 3) for k, v in by_model.items()},
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
