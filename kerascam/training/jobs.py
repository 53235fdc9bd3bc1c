"""``train.py --model all --jobs N``: models trained side by side, each in a process of its own.

The pool (``train_in_parallel``), how many processes and threads
(``default_jobs``, ``threads_per_job``), the order the models start in
(``training_order``), and the signal forwarding: SIGTERM or SIGINT to the
parent becomes SIGUSR1 to each training process, which saves and stops
(``kerascam.training.checkpoints.StopRequest``).
"""

import os

from kerascam import training
from kerascam.training.checkpoints import expected_images_per_second
from kerascam.training.errors import TrainingError, TrainingInterrupted, first_line


def default_jobs(strategy):
    """Models to train at once: 2 on a CPU-only machine with 2+ cores, else 1.

    One training process keeps about 1.2 of 2 CPU cores busy here (small
    convolutions leave the second one idle much of the time); two at once use
    both (measured: ResNet50 and VGG16 together take 1.6x less wall time
    than one after the other). GPUs and multi-device strategies train one
    model at a time; so does Keras' JAX backend (the pool is TensorFlow's).
    """
    from kerascam import backend

    if backend.name() == "jax":
        return 1
    import tensorflow as tf

    if strategy in ("mirrored", "multiworker") or tf.config.list_physical_devices("GPU"):
        return 1
    return 2 if training.available_cpus() >= 2 else 1


def threads_per_job(jobs):
    """TensorFlow threads for each of ``jobs`` training processes: the cores split evenly, at least 1.

    Left alone, every process starts a pool as wide as the machine, so two
    processes on 2 cores run 4 busy threads that compete for them; one
    thread per process trains more images per CPU-second (measured with
    ``benchmarks/train_speed.py``, two copies at once: ``benchmarks/README.md``,
    "Threads").
    """
    return max(1, training.available_cpus() // jobs)


def training_order(run_configs):
    """``run_configs`` costliest first, so that a pool of processes finishes together.

    The cost is the model's expected training speed on a CPU, where a pool is
    the default (its spec's ``images_per_second["shapes"]``, measured on this
    project's 2-core CPU): slowest first. A model with no measured speed
    counts as slow as the slowest known one, so that it starts early rather
    than run alone at the end; ties keep the order of ``run_configs`` (the
    model registry's). For the paper's four models: vgg16, resnet50, unet,
    unet_ablated.
    """
    _, images_per_second = expected_images_per_second("shapes")
    slowest = min(images_per_second.values())
    return sorted(run_configs, key=lambda config: images_per_second.get(config.model, slowest))


# In a training process of --jobs N: the parent asked to stop (SIGUSR1).
_stop_requested = []


def _train_in_child(config, workdir, verbose):
    if _stop_requested:  # a model queued before the stop: left for the next run
        raise TrainingInterrupted(f"{config.model}: not started; the same command trains it", 143)
    try:
        return training.train(config, workdir, verbose=verbose)
    except TrainingInterrupted:
        _stop_requested.append(True)
        raise


def _prepare_training_process(threads):
    import signal

    import tensorflow as tf

    # Before the first op: the pools are built when the runtime starts.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    # Ctrl-C reaches the whole process group: the parent passes it on as
    # SIGUSR1, the one request a training process acts on between models.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda signum, frame: _stop_requested.append(signum))


def train_in_parallel(run_configs, workdir, jobs, verbose):
    """Trains each config in a process of its own, ``jobs`` at a time.

    Each process gets ``threads_per_job(jobs)`` TensorFlow threads (recorded
    in ``run.json``), and each run is the same as a run alone with as many
    threads (same seed, same data order); with another number of threads
    oneDNN may sum in another order (VGG16's weights moved by 1e-5 after 4
    smoke steps with 1 thread instead of 2; ResNet50's did not), and over a
    demo run such differences grow into a few points of accuracy. A failed
    model does not stop the others; the failures are raised together at the
    end. The models start in ``training_order``.

    SIGTERM or SIGINT to this process is passed on to the training processes
    as SIGUSR1 (each finishes its step, saves and stops; a signal they got
    straight from the terminal or the system counts the same, once), no
    model starts after it, and this process raises ``TrainingInterrupted``
    with its own code once they have saved. A second signal kills them all
    at once.

    Returns:
        The ``run.json`` summaries, in the order of ``run_configs``.
    """
    import concurrent.futures
    import multiprocessing

    order = training_order(run_configs)
    threads = threads_per_job(jobs)
    print(f"training {', '.join(c.model for c in order)}, {jobs} at a time, each in its own process "
          f"with {threads} thread{'s' if threads > 1 else ''} "
          f"(curves: {os.path.join(workdir, 'MODEL', 'history.csv')})", flush=True)
    summaries, failures = {}, []
    context = multiprocessing.get_context("spawn")  # a fresh TensorFlow in every process
    futures = {}
    with _SignalsPassedOn(futures) as signals:
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                                                    initializer=_prepare_training_process, initargs=(threads,)) as pool:
            for config in order:
                futures[pool.submit(_train_in_child, config, workdir, verbose)] = config.model
            _collect(futures, summaries, failures)
    if signals.received:
        raise TrainingInterrupted("train.py: interrupted; the models under way saved a checkpoint, "
                                  "the same command resumes", 128 + signals.received[0])
    if failures:
        raise TrainingError("; ".join(failures))
    return [summaries[c.model] for c in run_configs]


class _SignalsPassedOn:
    """While in the ``with`` block, SIGTERM and SIGINT to this process go on to the training processes.

    The first signal cancels the models not started yet (the futures of
    ``futures``, a dict filled as they are submitted) and sends SIGUSR1 to
    each training process; the second kills them all and ends this process
    by the signal's default action. Installed from the main thread only
    (Python's rule); ``received`` lists the signals caught.
    """

    def __init__(self, futures):
        self.futures = futures
        self.received = []
        self.previous = {}

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.pass_on) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def pass_on(self, signum, frame):
        import multiprocessing
        import signal

        children = multiprocessing.active_children()
        if self.received:  # the second signal: no more saving
            for child in children:
                os.kill(child.pid, signal.SIGKILL)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received.append(signum)
        for future in list(self.futures):
            future.cancel()  # the models not started yet
        for child in children:
            os.kill(child.pid, signal.SIGUSR1)

    def __exit__(self, *exc):
        import signal

        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _collect(futures, summaries, failures):
    """Waits for ``futures`` (future -> model): each summary into ``summaries``, each failure's line into ``failures``."""
    import concurrent.futures

    for future in concurrent.futures.as_completed(futures):
        model = futures[future]
        if future.cancelled():
            continue
        try:
            summaries[model] = s = future.result()
        except TrainingInterrupted as e:
            print(e, flush=True)
            continue
        except Exception as e:  # noqa: BLE001  (reported with the others at the end)
            failures.append(f"{model}: {first_line(e)}")
            print(f"{model} failed: {first_line(e)}", flush=True)
            continue
        print(f"{model} done: val_accuracy {s['val_accuracy']:.4f} in {s['wall_seconds']:.0f} s", flush=True)
