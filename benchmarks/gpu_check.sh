#!/usr/bin/env bash
# One pass over what only a GPU can tell, in under 8 minutes on one H200:
#
#     bash benchmarks/gpu_check.sh [RESULTS_DIR]     # default: $OUT if set, else gpu-check/
#
# 1. cams: the CAM engine against tf-keras-vis at the paper's width
#    (benchmarks/cams.py: 224x224, 1000 classes, U-Net filters 64; ResNet50
#    and U-Net, ScoreCAM with N = 256).
# 2. train-speed: U-Net (64 filters) and ResNet50 train steps at 224x224,
#    batch 64, in float32, mixed_bfloat16 and mixed_float16, without and
#    with XLA: images/s, FLOP/s and MFU (benchmarks/train_speed.py).
# 3. pipeline: the ImageNet input pipeline against the ResNet50 train step
#    (benchmarks/pipeline.py, bfloat16, batch 128).
# 4. paper224-train, paper224-evaluate, paper224-maps: the four models
#    trained on the embedded data at 224x224 (--preset paper224, precision
#    auto: bfloat16 from compute capability 8.0 on), the evaluation on 50
#    images, and the size of each model's CAM (ResNet50's: 7x7, as in the paper).
#
# Where TensorFlow sees no GPU (or is not installed) but JAX (with Keras) does,
# the paper's geometry runs end to end under Keras' JAX backend: the CAM
# engine's ratios at 224 (batch 32), the models' train steps and MFU
# (benchmarks/backend_speed.py), the four paper224 models trained and
# evaluated (train.py, evaluate.py --cam all on 50 images), and the paper's
# Table I layout beside its numbers (benchmarks/table1.py). If the deadline
# stops the training, run the script again: it resumes from the checkpoints.
#
# Each step runs under `timeout`, within a deadline that keeps the whole under
# 8 minutes (GPU_CHECK_SECONDS, default 470); a step that runs out is stopped
# (training saves a checkpoint on SIGTERM: the same command resumes it) and
# the next one starts. Every step's output is also kept in RESULTS_DIR; the
# last lines sum up each step's exit status and time. Exit status: 0 when
# every step passed, 1 otherwise; without a GPU, one line and 0.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if ! ls /dev/nvidia[0-9]* >/dev/null 2>&1 && ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check: no GPU on this machine (no /dev/nvidia* and no nvidia-smi); nothing to check"
    exit 0
fi
GPUS=$("$PY" -c 'import kerascam, tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))' 2>/dev/null)
BACKEND=tensorflow
if [ "${GPUS:-0}" = "0" ]; then
    # No TensorFlow GPU build (or no TensorFlow): the models alone, under Keras' JAX backend.
    GPUS=$(KERAS_BACKEND=jax "$PY" -c 'import jax, keras; print(sum(d.platform == "gpu" for d in jax.devices()))' 2>/dev/null)
    if [ "${GPUS:-0}" = "0" ]; then
        echo "gpu_check: neither TensorFlow nor JAX (with Keras) sees a GPU on this machine; nothing to check"
        exit 0
    fi
    BACKEND=jax
fi

RESULTS=${1:-${OUT:-gpu-check}}
mkdir -p "$RESULTS"
DEADLINE=$(( SECONDS + ${GPU_CHECK_SECONDS:-470} ))
KILL_AFTER=10  # after the TERM of a timeout: time to save a checkpoint
SUMMARY=()
FAILED=0

# step NAME SECONDS COMMAND...: runs COMMAND for at most SECONDS (less when
# the deadline is nearer), its output to the terminal and RESULTS/NAME.txt.
step() {
    local name=$1 budget=$2 wanted=$2
    shift 2
    local left=$(( DEADLINE - SECONDS - KILL_AFTER ))
    (( left < budget )) && budget=$left
    if (( budget < wanted && budget < 15 )); then  # cut to under 15 s: not worth starting
        echo "== $name: skipped, the time budget is spent"
        SUMMARY+=("$name: skipped (time budget spent)")
        FAILED=1
        return
    fi
    echo "== $name (timeout ${budget} s): $*"
    local start=$SECONDS
    timeout --kill-after="$KILL_AFTER" "$budget" "$@" 2>&1 | tee "$RESULTS/$name.txt"
    local status=${PIPESTATUS[0]}
    local verdict="exit $status"
    (( status == 124 || status == 137 )) && verdict="timed out after ${budget} s"
    (( status != 0 )) && FAILED=1
    echo "== $name: $verdict ($(( SECONDS - start )) s)"
    SUMMARY+=("$name: $verdict, $(( SECONDS - start )) s")
}

# finish [NOTE]: each step's exit status and time, then exit 0 only when all passed.
finish() {
    echo
    echo "gpu_check summary ($SECONDS s in all${1:-}):"
    printf '  %s\n' "${SUMMARY[@]}"
    exit $FAILED
}

echo "gpu_check: $GPUS GPU(s): $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1); results in $RESULTS"

if [ "$BACKEND" = jax ]; then
    # TensorFlow sees no GPU (or is absent), JAX does: the paper's geometry end
    # to end under Keras' JAX backend, with no TensorFlow needed. Two runs of
    # this script finish it where one runs out of time: training saves a
    # checkpoint on the timeout's SIGTERM and the second run resumes it (a
    # trained model is skipped), then evaluates.
    echo "gpu_check: TensorFlow sees no GPU; JAX does: the paper224 run under Keras' JAX backend"
    export KERAS_BACKEND=jax
    # What the JAX path imports beyond JAX itself; a missing one must be
    # carried (sizes in benchmarks/README.md, gpu_check.sh).
    "$PY" -c 'import importlib.util as u; m = [n for n in ("keras", "h5py", "optree", "rich", "cv2", "matplotlib", "scipy") if u.find_spec(n) is None]; print("gpu_check: missing here:", ", ".join(m) or "nothing")' 2>&1 | tee "$RESULTS/missing.txt"
    RUNS="$RESULTS/runs-paper224"
    step cams-jax 60 "$PY" benchmarks/cams.py --keras-backends jax --models resnet50,unet --batch-size 32 \
        --methods gradcam,gradcam++,scorecam --scorecam-max-n 256 --repeats 2 --json "$RESULTS/cams_jax.json"
    step paper224-steps 80 "$PY" benchmarks/backend_speed.py --preset paper224 --precision mixed_bfloat16 \
        --batch-size 32 --estimate paper224 --deadline-s 60 --json "$RESULTS/backend_paper224.json"
    step paper224-train 200 "$PY" train.py --model all --preset paper224 --workdir "$RUNS" --quiet
    step paper224-evaluate 100 "$PY" evaluate.py --cam all --workdir "$RUNS" --num-images 50 \
        --faithfulness-images 10 --road-images 5 --randomization-images 5 --grid-pointing-images 20 \
        --figures 4 --quiet
    step table1 10 "$PY" benchmarks/table1.py "$RUNS/eval/table.json"
    finish ", Keras' JAX backend"
fi

step cams 90 "$PY" benchmarks/cams.py --models resnet50,unet --repeats 3 --scorecam-max-n 256 \
    --reference-time-s 20 --json "$RESULTS/cams.json"
step train-speed 110 "$PY" benchmarks/train_speed.py --models unet,resnet50 --image-size 224 --unet-filters 64 \
    --batch-size 64 --num-classes 1000 --precision float32,mixed_bfloat16,mixed_float16 --xla both \
    --steps 5 --rounds 2 --peak-size 8192 --json "$RESULTS/train_speed.json"
step pipeline 50 "$PY" benchmarks/pipeline.py --model resnet50 --batch-size 128 --images 384 \
    --pipeline-batches 6 --steps 5 --rounds 2 --mixed-precision mixed_bfloat16 --json "$RESULTS/pipeline.json"
step paper224-train 160 "$PY" train.py --model all --preset paper224 --workdir "$RESULTS/runs-paper224" --quiet
step paper224-evaluate 45 "$PY" evaluate.py --cam all --workdir "$RESULTS/runs-paper224" --num-images 50 \
    --faithfulness-images 10 --road-images 5 --randomization-images 5 --figures 4 --quiet
step paper224-maps 15 "$PY" - "$RESULTS/runs-paper224" <<'EOF'
import os, sys
import kerascam  # noqa: F401  (quiets TensorFlow)
from kerascam.export import load_keras
from kerascam.models import MODEL_NAMES, target_layer_name
for name in MODEL_NAMES:
    path = os.path.join(sys.argv[1], name, "model.keras")
    if os.path.exists(path):
        model = load_keras(path)
        shape = model.get_layer(target_layer_name(model)).output.shape
        print(f"{name}: input {model.input_shape[1]}x{model.input_shape[2]}, CAM {shape[1]}x{shape[2]} "
              f"at {target_layer_name(model)}")
    else:
        print(f"{name}: not trained")
EOF

finish
