"""The CIFAR-10-LT study (docs/experiments.md, docs/runs.md): the full-schedule rows (full.py),
their table, figures and verdicts (report.py, verdicts.py), the progress report (state.py), the
shortened schedule (short.py, cpu_short.sh), and the GPU check (gpu_check.py, gpu_check.sh)."""
