#!/usr/bin/env bash
# ERM, then M2m from that ERM g, on CIFAR-10-LT (ratio 100) built from the JPEG substitute
# (../shared/data/cifar10_jpeg, docs/data.md#cifar-10-jpeg-substitute), with a schedule short
# enough for a 2-core CPU.
#
#   nohup nice -n 10 launch/cifar/cpu_short.sh > runs/cifar10_jpeg_cpu_short.log 2>&1 &
#
# Environment (defaults): EPOCHS=10 DEFERRED=8 RUN_DIR=runs/cifar10_jpeg_cpu_short
# RESULTS=results/cifar10_jpeg_cpu_short.json DATA_DIR= (else $M2M_DATA_DIR or ../shared/data).
# The schedule is the CIFAR recipe scaled down (`python -m launch.cifar.short schedule`): warm-up
# min(5, EPOCHS/6) epochs, lr x0.01 at DEFERRED (the paper's 160 of 200) and again halfway to
# the end when that lies inside the run, M2m phase 2 from DEFERRED. On the JPEG substitute and
# with so few epochs, the figures are NOT comparable to the paper's; the results file says so.
# A finished stage (results.json present) is not rerun; an unfinished one resumes.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
EPOCHS=${EPOCHS:-10}
DEFERRED=${DEFERRED:-8}
RUN_DIR=${RUN_DIR:-runs/cifar10_jpeg_cpu_short}
RESULTS=${RESULTS:-results/cifar10_jpeg_cpu_short.json}
DATA_ARGS=()
if [ -n "${DATA_DIR:-}" ]; then DATA_ARGS=(--data_dir="$DATA_DIR"); fi

read -r WARMUP MILESTONES FACTORS < <("$PY" -m launch.cifar.short schedule --epochs "$EPOCHS" \
    --deferred "$DEFERRED")
echo "$(date -Is) schedule: epochs $EPOCHS, warm-up $WARMUP, lr milestones $MILESTONES x $FACTORS, deferred $DEFERRED"

COMMON=(--dataset=cifar10_jpeg_lt --imbalance_ratio=100 --epochs="$EPOCHS"
        --warmup_epochs="$WARMUP" --lr_milestones="$MILESTONES" --lr_factors="$FACTORS"
        --deferred_epoch="$DEFERRED" --verbose=2 "${DATA_ARGS[@]}")

if [ ! -f "$RUN_DIR/erm/results.json" ]; then
  echo "$(date -Is) ERM (g) ..."
  "$PY" -m m2m_tf.main "${COMMON[@]}" --method=erm --output_dir="$RUN_DIR/erm"
fi
if [ ! -f "$RUN_DIR/m2m/results.json" ]; then
  echo "$(date -Is) M2m from the ERM g ..."
  "$PY" -m m2m_tf.main "${COMMON[@]}" --method=m2m \
      --g_checkpoint="$RUN_DIR/erm/best_f.weights.h5" --output_dir="$RUN_DIR/m2m"
fi

"$PY" -m launch.cifar.short report --erm_dir "$RUN_DIR/erm" --m2m_dir "$RUN_DIR/m2m" \
    --output "$RESULTS" --epochs "$EPOCHS" --deferred "$DEFERRED"
echo "$(date -Is) done: $RESULTS"
