"""Which precision to train in: bfloat16 where the hardware computes it natively.

Keras' ``mixed_bfloat16`` policy computes in bfloat16 and keeps the variables
in float32. On hardware with native bfloat16 arithmetic it trains faster than
float32; on hardware that emulates it, slower. ``train.py --mixed-precision
auto`` (the default of the ``paper224`` preset, see
``kerascam.configs.DEFAULT_MIXED_PRECISION``) asks
:func:`resolve_mixed_precision`, which looks at the device the run will use:

* a GPU: bfloat16 from compute capability 8.0 on (Ampere, Hopper, ...);
* a CPU on Linux: bfloat16 when ``/proc/cpuinfo`` lists ``avx512_bf16``
  (Intel Cooper Lake and Sapphire Rapids on, AMD Zen 4 on) or ``amx_bf16``
  (Intel Sapphire Rapids on), the instructions oneDNN uses for bfloat16
  convolutions and matmuls;
* a CPU elsewhere (macOS, Windows): float32, since there is no flag file to
  read and Apple silicon and most desktop CPUs emulate bfloat16 in
  TensorFlow.

The choice is a policy name or None (float32), the value of
``TrainConfig.mixed_precision``; a run records it in ``config.json`` and
``run.json``, and a resumed run keeps the precision it started with.
"""

import contextlib
import dataclasses
import os
import sys
from typing import Optional

# What --mixed-precision takes: "none" is float32, "auto" asks the hardware.
REQUESTS = ("none", "auto", "mixed_bfloat16", "mixed_float16")
CPU_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
# Ampere (8.0) is the first GPU generation with bfloat16 tensor cores.
GPU_BFLOAT16_CAPABILITY = (8, 0)


@dataclasses.dataclass(frozen=True)
class PrecisionChoice:
    """A resolved ``--mixed-precision``.

    Attributes:
        policy: The Keras dtype policy to train in, or None for float32 (the
            value of ``TrainConfig.mixed_precision``).
        requested: What was asked: one of ``REQUESTS``.
        reason: Why, in a few words, e.g. ``"auto: the CPU has avx512_bf16"``.
        warning: A one-line warning for the user (bfloat16 forced on hardware
            that emulates it), or None.
    """

    policy: Optional[str]
    requested: str
    reason: str
    warning: Optional[str] = None

    @property
    def name(self):
        """The policy's name, ``"float32"`` for None."""
        return self.policy or "float32"

    def describe(self):
        """The line a run starts with: ``precision mixed_bfloat16 (auto: the CPU has avx512_bf16)``."""
        return f"precision {self.name} ({self.reason})"

    def to_dict(self):
        return {"policy": self.name, "requested": self.requested, "reason": self.reason}


def cpu_bfloat16_flags(cpuinfo_path="/proc/cpuinfo"):
    """The CPU's native bfloat16 instruction sets of ``CPU_BFLOAT16_FLAGS``.

    Args:
        cpuinfo_path: Linux' CPU description (default ``/proc/cpuinfo``).

    Returns:
        A tuple of the flags found, in ``CPU_BFLOAT16_FLAGS``' order; empty
        when there are none, off Linux, or when the file cannot be read.
    """
    if not sys.platform.startswith("linux"):
        return ()
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):  # every core lists the same flags
                    flags = set(line.partition(":")[2].split())
                    return tuple(flag for flag in CPU_BFLOAT16_FLAGS if flag in flags)
    except OSError:
        pass
    return ()


def gpu_compute_capabilities():
    """``(name, (major, minor))`` of every GPU the backend sees; capability None when unknown.

    TensorFlow's devices, or under Keras' JAX backend JAX's (TensorFlow need
    not be installed there).
    """
    from kerascam import backend

    if backend.name() == "jax":
        import jax

        gpus = []
        for device in jax.devices():
            if device.platform != "gpu":
                continue
            capability = getattr(device, "compute_capability", None)  # "9.0" on CUDA devices
            try:
                capability = tuple(int(part) for part in str(capability).split(".")[:2])
            except ValueError:
                capability = None
            gpus.append((device.device_kind, capability))
        return gpus
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append((details.get("device_name", device.name), details.get("compute_capability")))
    return gpus


def native_bfloat16():
    """Whether the device a run trains on computes bfloat16 natively, and why.

    Returns:
        ``(native, why)``: on GPUs, native when every GPU has compute
        capability 8.0 or more (``why`` names the GPU); on CPUs, when
        :func:`cpu_bfloat16_flags` finds a flag (``why`` names it).
    """
    gpus = gpu_compute_capabilities()
    if gpus:
        slow = [(name, cc) for name, cc in gpus if cc is None or tuple(cc) < GPU_BFLOAT16_CAPABILITY]
        name, cc = slow[0] if slow else gpus[0]
        capability = "unknown compute capability" if cc is None else f"compute capability {cc[0]}.{cc[1]}"
        return not slow, f"the GPU {name} has {capability}"
    flags = cpu_bfloat16_flags()
    if flags:
        return True, f"the CPU has {flags[0]}"
    if not sys.platform.startswith("linux"):
        return False, f"no bfloat16 detection on {sys.platform}"
    return False, f"the CPU has neither {' nor '.join(CPU_BFLOAT16_FLAGS)}"


def resolve_mixed_precision(requested):
    """The precision to train in for ``--mixed-precision requested``.

    Args:
        requested: ``"auto"`` (bfloat16 where :func:`native_bfloat16` finds
            it, else float32), ``"none"`` or None (float32),
            ``"mixed_bfloat16"`` or ``"mixed_float16"`` (as asked; forcing
            bfloat16 without native support adds a warning that it will be
            slow).

    Returns:
        A :class:`PrecisionChoice`.

    Raises:
        ValueError: ``requested`` is none of ``REQUESTS``.
    """
    if requested is None or requested == "none":
        return PrecisionChoice(None, "none", "asked for float32")
    if requested not in REQUESTS:
        raise ValueError(f"Unknown mixed precision {requested!r}. Choose one of: {', '.join(REQUESTS)}")
    if requested == "mixed_float16":
        return PrecisionChoice("mixed_float16", requested, "as asked, with dynamic loss scaling")
    native, why = native_bfloat16()
    if requested == "mixed_bfloat16":
        if native:
            return PrecisionChoice("mixed_bfloat16", requested, f"as asked; {why}")
        return PrecisionChoice(
            "mixed_bfloat16", requested, f"as asked; {why}",
            warning=f"warning: mixed_bfloat16 without native bfloat16 ({why}): it is emulated and will train "
                    "slower than float32",
        )
    if native:
        return PrecisionChoice("mixed_bfloat16", "auto", f"auto: {why}")
    return PrecisionChoice(None, "auto", f"auto: {why}")


def resolve_for_run(requested, run_dir):
    """:func:`resolve_mixed_precision` for the run in ``run_dir``, keeping a started run's precision.

    A run started with ``auto`` resumes in the precision it started with even
    on other hardware (a checkpoint of another precision cannot be resumed,
    see ``kerascam.training``); an explicit request is taken as is, and a
    mismatch is then reported by ``train``.

    Args:
        requested: As for :func:`resolve_mixed_precision`.
        run_dir: The run's folder, ``WORKDIR/MODEL``.

    Returns:
        A :class:`PrecisionChoice`.
    """
    path = os.path.join(run_dir, "config.json")
    if requested == "auto" and os.path.exists(path):
        from kerascam import io

        try:
            previous = io.read_json(path).get("mixed_precision")
        except (OSError, ValueError, AttributeError):
            previous = "unreadable"
        if previous is None or previous in ("mixed_bfloat16", "mixed_float16"):
            reason = f"auto: resuming the run in {run_dir}, started in {previous or 'float32'}"
            return PrecisionChoice(previous, "auto", reason)
    return resolve_mixed_precision(requested)


@contextlib.contextmanager
def dtype_policy(name):
    """Sets Keras' global dtype policy to ``name`` (None: float32) for a block.

    Keras is imported here, not with this module, which the command lines
    read before any framework loads; nothing here needs TensorFlow, so
    ``benchmarks/backend_speed.py`` uses it under Keras' JAX backend too.
    """
    import keras

    from kerascam.configs import MIXED_PRECISION_POLICIES

    previous = keras.config.dtype_policy()
    if name is not None and name not in MIXED_PRECISION_POLICIES:
        raise ValueError(f"Unknown mixed precision {name!r}. Choose one of: {', '.join(MIXED_PRECISION_POLICIES)}")
    keras.config.set_dtype_policy(name or "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
