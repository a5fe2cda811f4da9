"""A deterministic on-disk cache of built dataset arrays (.npz), keyed by builder, version, raw
files' sha256 and options, with a manifest of every array's digest; a file failing any check is
rebuilt with a warning (docs/data.md#where-the-files-live).
"""

import hashlib
import json
import logging
import os
import pathlib
import zipfile
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from data_prep import atomic

CACHE_DIR_ENV = "M2M_CACHE_DIR"
_KEY_ARRAY = "__cache_key__"
_MANIFEST_ARRAY = "__cache_manifest__"

_log = logging.getLogger(__name__)


def resolve_cache_dir(cache_dir: Optional[Union[str, os.PathLike]] = None
                     ) -> pathlib.Path:
  """The cache folder: the argument, else $M2M_CACHE_DIR, else ~/.cache/m2m_tf (not created)."""
  if cache_dir:
    return pathlib.Path(cache_dir).expanduser()
  env = os.environ.get(CACHE_DIR_ENV)
  if env:
    return pathlib.Path(env).expanduser()
  return pathlib.Path.home() / ".cache" / "m2m_tf"


def cache_key(builder: str, version: str, file_digests: Mapping[str, str],
              options: Mapping[str, Any]) -> str:
  """Hex sha256 of the canonical JSON of (builder, version, digests, options).

  Args:
    builder: the builder name, e.g. "reuters".
    version: the builder's output version string.
    file_digests: raw file name (relative path) -> its sha256.
    options: JSON-serialisable builder options (tuples become lists).
  """
  record = {"builder": builder, "version": version,
            "files": dict(sorted(file_digests.items())),
            "options": dict(sorted(options.items()))}
  text = json.dumps(record, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_path(cache_dir: Union[str, os.PathLike], builder: str,
               key: str) -> pathlib.Path:
  """The .npz path of one cache entry."""
  return pathlib.Path(cache_dir) / f"{builder}-{key[:32]}.npz"


def save_npz_atomic(path: Union[str, os.PathLike],
                    arrays: Mapping[str, np.ndarray]) -> None:
  """Writes `arrays` to `path` (.npz, no pickles) atomically (`data_prep.atomic`)."""
  def write(tmp):
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
  atomic.atomic_save(write, str(path))


def array_digest(array: np.ndarray) -> str:
  """Hex sha256 of an array's dtype, shape and C-order bytes (no object dtype)."""
  array = np.ascontiguousarray(array)
  h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode("utf-8"))
  # A flat uint8 view hashes the buffer without copying it (large image arrays).
  h.update(array.reshape(-1).view(np.uint8))
  return h.hexdigest()


def manifest(arrays: Mapping[str, np.ndarray]) -> Dict[str, dict]:
  """name -> {"sha256", "dtype", "shape"} of every array (stored beside them)."""
  return {name: {"sha256": array_digest(a), "dtype": np.asarray(a).dtype.str,
                 "shape": list(np.shape(a))}
          for name, a in sorted(arrays.items())}


def check_manifest(arrays: Mapping[str, np.ndarray],
                   entries: Mapping[str, dict]) -> Optional[str]:
  """The first reason why `arrays` (read from a cache file) do not match their manifest
  `entries`, or None if they do."""
  missing = sorted(set(entries) - set(arrays))
  if missing:
    return f"lacks array(s) {missing}"
  unlisted = sorted(set(arrays) - set(entries))
  if unlisted:
    return f"has array(s) {unlisted} without a stored hash"
  for name, want in sorted(entries.items()):
    got = manifest({name: arrays[name]})[name]
    if (got["dtype"], got["shape"]) != (want["dtype"], want["shape"]):
      return (f"array {name!r} is {got['dtype']} {tuple(got['shape'])}, its manifest says "
              f"{want['dtype']} {tuple(want['shape'])}")
    if got["sha256"] != want["sha256"]:
      return f"array {name!r} does not match its stored sha256 (same dtype and shape)"
  return None


def _read_npz(path: pathlib.Path) -> Optional[Dict[str, np.ndarray]]:
  """All arrays of an .npz file, or None (with a warning) if it cannot be read."""
  try:
    with np.load(path, allow_pickle=False) as data:
      return {name: data[name] for name in data.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    _log.warning("Cache file %s is unreadable (%s); rebuilding.", path, e)
    return None


def _try_load(path: pathlib.Path, key: str) -> Optional[Dict[str, np.ndarray]]:
  """Loads a verified cache entry, or returns None if it is absent or fails a check."""
  if not path.is_file():
    return None
  arrays = _read_npz(path)
  if arrays is None:
    return None
  stored_key = arrays.pop(_KEY_ARRAY, None)
  if stored_key is None or str(stored_key) != key:
    _log.warning("Cache file %s has a different key; rebuilding.", path)
    return None
  stored = arrays.pop(_MANIFEST_ARRAY, None)
  if stored is None:
    _log.warning("Cache file %s has no content hashes (older format); rebuilding.", path)
    return None
  try:
    reason = check_manifest(arrays, json.loads(str(stored)))
  except (ValueError, TypeError, KeyError, AttributeError) as e:
    reason = f"has an unreadable manifest ({e})"
  if reason:
    _log.warning("Cache file %s %s; rebuilding.", path, reason)
    return None
  return arrays


def cached_arrays(builder: str, version: str,
                  file_digests: Mapping[str, str], options: Mapping[str, Any],
                  build_fn: Callable[[], Mapping[str, np.ndarray]], *,
                  cache_dir: Optional[Union[str, os.PathLike]] = None,
                  use_cache: bool = True,
                  required: Optional[Sequence[str]] = None
                  ) -> Dict[str, np.ndarray]:
  """Returns `build_fn()`'s arrays, from the cache when possible.

  Args:
    builder, version, file_digests, options: see `cache_key`.
    build_fn: builds the arrays (a dict of name -> ndarray, no object dtype).
    cache_dir: see `resolve_cache_dir`.
    use_cache: False builds without reading or writing the cache.
    required: array names a valid entry must contain (else it is rebuilt).
  Returns:
    name -> ndarray.
  """
  if not use_cache:
    return dict(build_fn())
  key = cache_key(builder, version, file_digests, options)
  path = cache_path(resolve_cache_dir(cache_dir), builder, key)
  arrays = _try_load(path, key)
  missing = sorted(set(required or ()) - set(arrays or {}))
  if arrays is not None and not missing:
    return arrays
  if arrays is not None:
    _log.warning("Cache file %s lacks required array(s) %s; rebuilding.", path, missing)
  arrays = dict(build_fn())
  stored_manifest = np.array(json.dumps(manifest(arrays), sort_keys=True))
  try:
    save_npz_atomic(path, {**arrays, _KEY_ARRAY: np.array(key),
                           _MANIFEST_ARRAY: stored_manifest})
  except OSError as e:
    _log.warning("Could not write cache file %s (%s); continuing uncached.",
                 path, e)
  return arrays
