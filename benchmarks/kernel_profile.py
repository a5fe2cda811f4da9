"""Kernel time of compiled steps, by op type and by part of the step, from TensorFlow's profiler.

`tf.profiler.experimental` writes an XSpace (`*.xplane.pb`) whose host plane holds one event per
executed TF op, named "<op name>:<op type>". The public API writes the trace but has no reader,
so the proto is parsed with the class that ships inside TensorFlow
(`tensorflow.tsl.profiler.protobuf.xplane_pb2`).
"""

import collections
import glob
import os
import re
import tempfile
from typing import Callable, Dict, Iterable, Tuple

import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

# Ops that only call other ops: their events contain their callees' events.
CONTAINER_OPS = frozenset({"StatefulPartitionedCall", "PartitionedCall", "While", "StatelessWhile",
                           "If", "StatelessIf", "Case", "StatelessCase"})
_OP_EVENT = re.compile(r"([^\s:]+):(\w+)")


def op_events(space) -> Iterable[Tuple[str, str, int]]:
  """(op name, op type, duration in ps) of every leaf TF op event of an XSpace."""
  for plane in space.planes:
    meta = plane.event_metadata
    for line in plane.lines:
      for event in line.events:
        m = _OP_EVENT.fullmatch(meta[event.metadata_id].name)
        if m and m.group(2) not in CONTAINER_OPS:
          yield m.group(1), m.group(2), event.duration_ps


def part_of(op_name: str, op_type: str) -> str:
  """The part of a train step an op belongs to: input, translation (the M2m trainer's phase-2
  `tf.cond` branch), backward, optimizer, forward or other."""
  scopes = op_name.split("/")
  while scopes and scopes[0] in CONTAINER_OPS:
    scopes = scopes[1:]
  if op_type.startswith("Iterator"):
    return "input"
  if any(s == "cond" or s.startswith("cond_") for s in scopes):
    return "translation"
  if any(s.startswith("gradient_tape") for s in scopes):
    return "backward"
  if scopes and re.fullmatch(r"(sgd|optimizer)(_\d+)?", scopes[0].lower()):
    return "optimizer"
  if scopes and re.fullmatch(r"[fg](_\d+)?", scopes[0]):
    return "forward"
  return "other"


def summarize(events: Iterable[Tuple[str, str, int]], top: int = 12) -> dict:
  """Shares of summed kernel time by part and by op type (the `top` largest, the rest as
  "(other types)"), and the total in ms."""
  by_part, by_type = collections.Counter(), collections.Counter()
  for name, op_type, ps in events:
    by_part[part_of(name, op_type)] += ps
    by_type[op_type] += ps
  total = sum(by_type.values())
  if not total:
    return {"total_ms": 0.0, "parts": {}, "types": {}}
  types = dict(by_type.most_common(top))
  rest = total - sum(types.values())
  if rest:
    types["(other types)"] = rest
  return {"total_ms": total / 1e9,
          "parts": {k: v / total for k, v in by_part.most_common()},
          "types": {k: v / total for k, v in types.items()}}


def read_space(logdir: str):
  """The XSpace of the newest `*.xplane.pb` under `logdir`."""
  paths = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True),
                 key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f"no *.xplane.pb under {logdir}")
  space = xplane_pb2.XSpace()
  with open(paths[-1], "rb") as fh:
    space.ParseFromString(fh.read())
  return space


def profile(run_steps: Callable[[], object], top: int = 12) -> Dict[str, object]:
  """Runs `run_steps()` under the profiler; returns `summarize` of its kernel events."""
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    try:
      run_steps()
    finally:
      tf.profiler.experimental.stop()
    return summarize(op_events(read_space(logdir)), top)
