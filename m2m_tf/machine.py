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


def cpu_model(info: Dict[str, str]) -> str:
  """The CPU's model name from cpuinfo fields `info`, with its family and model numbers where
  known: a virtual machine's name can be as vague as "AMD EPYC" for CPUs 4x apart in speed."""
  name = info.get("model name") or platform.processor() or platform.machine() or "unknown"
  if "cpu family" in info and "model" in info:
    name += f" (family {info['cpu family']}, model {info['model']})"
  return name


@functools.lru_cache(maxsize=1)
def machine_name() -> str:
  """This machine's CPU model and core count, e.g. "AMD EPYC (family 25, model 17), 2 cores"
  (a run that moves between machines records which epochs ran where; a pace is its machine's,
  docs/platform.md)."""
  return f"{cpu_model(cpuinfo())}, {os.cpu_count()} cores"
