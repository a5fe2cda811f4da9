#!/usr/bin/env bash
# Starts N local workers of one multi-worker run (--strategy=multi_worker), for a demonstration.
#
#   bash launch/multiworker.sh 2 --dataset=reuters --method=m2m --output_dir=runs/reuters_mw
#
# Every worker runs `python -m m2m_tf.main --strategy=multi_worker FLAGS...` with its own
# TF_CONFIG (a cluster of N workers on free localhost ports; worker 0 is the chief) and logs to
# $LOG_DIR/worker-I.log (default: multiworker_logs/). The script waits for all workers. When one
# fails it stops the others (they would wait for the lost peer) and exits non-zero; run the
# same command again to resume from the last committed epoch. On a real cluster, give each
# host its own TF_CONFIG or run under Slurm (docs/distributed.md).
set -u

usage="usage: bash launch/multiworker.sh N [m2m_tf.main flags...]"
if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "$usage" >&2
  exit 2
fi
n=$1
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-}
if [[ -z "$python" ]]; then
  python=python3
  [[ -x "$here/.venv/bin/python" ]] && python="$here/.venv/bin/python"
fi
log_dir=${LOG_DIR:-multiworker_logs}
mkdir -p "$log_dir" || exit 1

# One TF_CONFIG per worker: N localhost ports free now (bound together, so they differ, then
# released for the workers), from the helpers the tests use.
configs=$(PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$python" -c '
import sys
from m2m_tf.training import multi_worker as mw
ports = mw.free_local_ports(int(sys.argv[1]))
print("\n".join(mw.local_tf_config(ports, i) for i in range(len(ports))))
' "$n" 2>/dev/null) || { echo "could not choose ports (is m2m_tf importable?)" >&2; exit 1; }
mapfile -t tf_configs <<<"$configs"

pids=()
stop_all() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null
  done
}
trap 'stop_all; exit 130' INT TERM

for ((i = 0; i < n; i++)); do
  TF_CONFIG="${tf_configs[$i]}" PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" \
    "$python" -m m2m_tf.main --strategy=multi_worker "$@" >"$log_dir/worker-$i.log" 2>&1 &
  pids+=($!)
  echo "worker $i: pid $! log $log_dir/worker-$i.log"
done

status=0
remaining=$n
while ((remaining > 0)); do
  wait -n
  rc=$?
  remaining=$((remaining - 1))
  if ((rc != 0 && status == 0)); then
    status=$rc
    echo "a worker exited with status $rc; stopping the others (see $log_dir/)" >&2
    stop_all
  fi
done
wait
if ((status == 0)); then
  tail -n 2 "$log_dir/worker-0.log"
else
  tail -n 3 "$log_dir"/worker-*.log >&2
fi
exit "$status"
