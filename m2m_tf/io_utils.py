"""Atomic file output: write to a temporary file in the same folder, then rename."""

import json
import math
import os
import shutil
import tempfile
from typing import Any


def _jsonable(obj: Any) -> Any:
  """NaN/Inf become None; NumPy scalars and arrays become Python values."""
  if isinstance(obj, dict):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if hasattr(obj, "tolist"):
    return _jsonable(obj.tolist())
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (temporary file + os.replace)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "w") as fh:
      fh.write(text)
      fh.flush()
      os.fsync(fh.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented JSON atomically; NaN becomes null."""
  atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def atomic_replace_dir(build_fn, path: str) -> None:
  """Builds a directory with `build_fn(tmp_path)` next to `path`, then renames it into place."""
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(path))
  try:
    target = os.path.join(tmp, "out")
    build_fn(target)
    if os.path.exists(path):
      shutil.rmtree(path)
    os.replace(target, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
