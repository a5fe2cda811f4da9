"""Atomic file output (the one helper; data_prep is the lowest floor): write to a temporary file
in the same folder, then rename."""

import hashlib
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


TMP_PREFIX = ".tmp-"


def _fsync_dir(folder: str) -> None:
  """Makes a rename inside `folder` durable (no-op where directories cannot be opened)."""
  try:
    fd = os.open(folder, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def atomic_save(save_fn, path: str) -> None:
  """Writes `path` atomically with `save_fn(tmp_path)`: a temporary file in the same folder
  (same suffix, so writers that check extensions accept it), fsync, then os.replace.

  A kill at any instant leaves either the old file or the new one, never a torn one.
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  name = os.path.basename(path)
  suffix = name[name.index("."):] if "." in name else ""
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix=suffix)
  os.close(fd)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make results private to one user
  try:
    save_fn(tmp)
    with open(tmp, "rb") as fh:
      os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(folder)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (temporary file + os.replace)."""
  def write(tmp):
    with open(tmp, "w") as fh:
      fh.write(text)
  atomic_save(write, path)


def read_json(path: str):
  """The JSON object in `path`, or None when it is missing, unreadable or not a JSON object."""
  try:
    with open(path) as fh:
      out = json.load(fh)
  except (OSError, ValueError):
    return None
  return out if isinstance(out, dict) else None


def file_sha256(path: str) -> str:
  """The hex sha256 of a file's bytes."""
  h = hashlib.sha256()
  with open(path, "rb") as fh:
    for block in iter(lambda: fh.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def atomic_write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented JSON atomically; NaN becomes null."""
  text = json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=False)
  atomic_write_text(path, text + "\n")


def atomic_replace_dir(build_fn, path: str) -> None:
  """Builds a directory with `build_fn(tmp_path)` next to `path`, then renames it into place."""
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=TMP_PREFIX + os.path.basename(path))
  try:
    target = os.path.join(tmp, "out")
    build_fn(target)
    if os.path.exists(path):
      shutil.rmtree(path)
    os.replace(target, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
