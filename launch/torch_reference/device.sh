#!/usr/bin/env bash
# The device side of the PyTorch reference (docs/torch_reference.md), for a GPU machine with
# PyTorch and no TensorFlow. From the repository root, with .torchref carried there:
#
#   OUT=<folder that comes back> bash launch/torch_reference/device.sh [--resume DIR] ARGS...
#
# runs `python3 -m launch.torch_reference all --data $DATA --out $WORK ARGS...` (DATA defaults to
# .torchref, WORK to /tmp/tr; --resume DIR first copies DIR's run folders into WORK), then packs
# what comes back: $OUT/all.log, $OUT/runs.tgz (histories, results, logs; no states) and one
# $OUT/states_s<seed>.tgz per seed (its runs' state.pt, under the device's 16 MiB per file).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to the folder that comes back}
DATA=${DATA:-.torchref}
WORK=${WORK:-/tmp/tr}
PY=${PYTHON:-python3}
mkdir -p "$WORK" "$OUT"
if [ "${1:-}" = "--resume" ]; then
  cp -r "$2"/. "$WORK"/
  shift 2
fi
export PYTHONUNBUFFERED=1
"$PY" -m launch.torch_reference all --data "$DATA" --out "$WORK" "$@" 2>&1 | tee "$OUT/all.log"
rc=${PIPESTATUS[0]}
parent=$(dirname "$WORK")
name=$(basename "$WORK")
tar czf "$OUT/runs.tgz" --exclude=state.pt -C "$parent" "$name"
for seed in $(find "$WORK" -name state.pt | sed 's|.*_s\([0-9]*\)/state.pt|\1|' | sort -u); do
  (cd "$parent" && find "$name" -path "*_s$seed/state.pt" -print0 |
     xargs -0 tar czf "$OUT/states_s$seed.tgz")
done
ls -la "$OUT"
exit "$rc"
