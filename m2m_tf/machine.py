"""The machine a process runs on, as records and benchmarks name it (no TensorFlow here)."""

import functools
import os
import platform
from typing import Dict


def cpuinfo() -> Dict[str, str]:
  """The first processor's /proc/cpuinfo fields ({} where there is none)."""
  out = {}
  try:
    with open("/proc/cpuinfo") as fh:
      for line in fh:
        if not line.strip():
          break
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
  except OSError:
    pass
  return out


@functools.lru_cache(maxsize=1)
def machine_name() -> str:
  """This machine's CPU model and core count, e.g. "AMD EPYC 7B13, 2 cores" (a run that moves
  between machines records which epochs ran where; speeds differ by CPU, docs/platform.md)."""
  model = cpuinfo().get("model name") or platform.processor() or platform.machine()
  return f"{model}, {os.cpu_count()} cores"
