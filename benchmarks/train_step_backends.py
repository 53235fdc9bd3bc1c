"""The real train step of train.py under Keras' TensorFlow and JAX backends, in images/s (one process each).

    python benchmarks/train_step_backends.py                 # both backends, the demo U-Net
    python benchmarks/train_step_backends.py --model resnet50 --steps 20 --rounds 5

Each backend runs in a child process (Keras' backend is chosen once per
process): it builds the model and optimizer as ``kerascam.training.train``
does (the demo preset's per-model settings, float32), then times
``kerascam.training.make_train_step`` (TensorFlow: the ``tf.function`` under
the default strategy) or ``kerascam.training.jax_steps.make_train_step`` (JAX:
``jax.jit`` over ``stateless_call``) on one batch of random images kept in
memory, reading the loss back after every step as the loop does; the first
call (tracing and compiling) is timed apart. The input pipeline is left out.
The table gives the median and range over ``--rounds`` rounds of ``--steps``
steps, wall-clock and CPU time of the process.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = """
import dataclasses, json, os, sys, time
import numpy as np
sys.path.insert(0, {root!r})
import kerascam
from kerascam import backend, configs
from kerascam.training.steps import build_model_for, make_optimizer

model_name, steps, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
config = configs.demo().for_model(model_name)
batch = {{"image": np.random.default_rng(0).integers(0, 256, (config.batch_size, config.image_size,
          config.image_size, 3)).astype(np.uint8), "label": np.arange(config.batch_size) % 5}}
model = build_model_for(config, 5)
optimizer = make_optimizer(config, 100)
optimizer.build(model.trainable_variables)
if backend.name() == "jax":
    from kerascam.training import jax_steps
    devices = jax_steps.LocalDevices.for_strategy("default")
    step = jax_steps.make_train_step(model, optimizer, num_classes=5)
    batch = devices.place(batch)
else:
    import tensorflow as tf
    from kerascam.training.steps import make_train_step
    step = make_train_step(model, optimizer, tf.distribute.get_strategy(), num_classes=5,
                           global_batch=config.batch_size)
    batch = {{"image": tf.constant(batch["image"]), "label": tf.constant(batch["label"], tf.int64)}}
start = time.perf_counter()
float(step(batch)[0])
first = time.perf_counter() - start
results = []
for _ in range(rounds):
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        float(step(batch)[0])
    results.append([time.perf_counter() - wall, time.process_time() - cpu])
print(json.dumps({{"first_call_s": first, "rounds": results, "batch": config.batch_size,
                  "image_size": config.image_size}}))
"""


def measure(backend, model, steps, rounds):
    env = {**os.environ, "KERAS_BACKEND": backend}
    if backend == "jax":
        env.setdefault("JAX_PLATFORMS", "cpu")
    out = subprocess.run([sys.executable, "-c", _CHILD.format(root=ROOT), model, str(steps), str(rounds)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet")
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"{args.model}, demo preset, float32; {args.rounds} rounds of {args.steps} steps; "
          "images/s median (range), wall and CPU")
    for backend in args.backends.split(","):
        r = measure(backend, args.model, args.steps, args.rounds)
        images = r["batch"] * args.steps
        wall = sorted(images / w for w, _ in r["rounds"])
        cpu = sorted(images / c for _, c in r["rounds"])
        print(f"{backend:>10}: {statistics.median(wall):7.1f} images/s ({wall[0]:.1f}-{wall[-1]:.1f}) wall, "
              f"{statistics.median(cpu):7.1f} ({cpu[0]:.1f}-{cpu[-1]:.1f}) per CPU-second; first call "
              f"{r['first_call_s']:.1f} s; batch {r['batch']} at {r['image_size']}x{r['image_size']}")


if __name__ == "__main__":
    main()
