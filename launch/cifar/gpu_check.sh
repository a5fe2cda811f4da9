#!/usr/bin/env bash
# One accelerator check that fits a 15-minute device budget. Run from the repo root:
#
#   OUT=./gpu_out launch/cifar/gpu_check.sh [--data_dir DIR] [--epochs 30 --deferred 20] [--tiny]
#
# 1. prints nvidia-smi and TensorFlow's GPU list (into $OUT/env.txt too);
# 2. installs the pinned dependencies when TensorFlow/Keras are missing (PyPI only), reporting
#    what it did; a failed install is reported and the check stops;
# 3. runs `python -m launch.cifar.gpu_check` (throughput, official g, short ERM -> M2m schedule on
#    the JPEG substitute), which writes $OUT/gpu_check.json and .md after every stage.
# Data: --data_dir DIR (a root holding cifar10_jpeg/{train,test}.npz), else $M2M_DATA_DIR,
# else ../shared/data or ./shared/data (data_prep/paths.py). The official g .npz is looked for
# in ../shared/pretrained, ./shared/pretrained or next to the data root, or given with --g_npz.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
{
  echo "== $(date -Is) $(hostname)"
  nvidia-smi 2>&1 || echo "nvidia-smi not available"
  "$PY" --version
} | tee "$OUT/env.txt"

if ! "$PY" -c "import tensorflow, keras, tensorflow_datasets, absl, sklearn" 2>/dev/null; then
  echo "== installing pinned dependencies from PyPI" | tee -a "$OUT/env.txt"
  t0=$(date +%s)
  if "$PY" -m pip install -q "tensorflow[and-cuda]==2.21.0" "keras==3.15.1" \
      "tensorflow-datasets==4.9.10" "absl-py==2.5.1" "scikit-learn==1.9.1" \
      "imbalanced-learn==0.14.2" "pandas" "importlib_resources" >>"$OUT/pip.log" 2>&1; then
    echo "== pip install ok in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/env.txt"
  else
    echo "== pip install FAILED after $(( $(date +%s) - t0 )) s; see pip.log" | tee -a "$OUT/env.txt"
    tail -20 "$OUT/pip.log"
    exit 2
  fi
else
  echo "== dependencies present" | tee -a "$OUT/env.txt"
fi
"$PY" -c "import tensorflow as tf, keras; print('TF', tf.__version__, 'Keras', keras.__version__,
'GPUs', tf.config.list_physical_devices('GPU'))" 2>&1 | grep -v "^I0000\|^WARNING: All log" \
  | tee -a "$OUT/env.txt"

"$PY" -m launch.cifar.gpu_check --out "$OUT" "$@"
rc=$?
echo "== gpu_check exit $rc; files in $OUT:"; ls -la "$OUT"
exit $rc
