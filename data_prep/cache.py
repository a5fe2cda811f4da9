"""A deterministic on-disk cache of built dataset arrays (.npz).

The cache key is the sha256 of a canonical JSON record of: the builder name, a
builder version string (bump it whenever the builder's output changes), the
sha256 of every raw input file, and the builder's options. Equal key means
equal arrays, so a hit is returned as is. Files are written atomically (a
temporary file in the cache folder, then `os.replace`), and a cache file that
cannot be read (truncated, corrupt, wrong key, missing arrays) is rebuilt and
overwritten.
"""

import hashlib
import json
import logging
import os
import pathlib
import tempfile
import zipfile
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np

CACHE_DIR_ENV = "M2M_CACHE_DIR"
_KEY_ARRAY = "__cache_key__"

_log = logging.getLogger(__name__)


def resolve_cache_dir(cache_dir: Optional[Union[str, os.PathLike]] = None
                     ) -> pathlib.Path:
  """The cache folder: the argument, else $M2M_CACHE_DIR, else ~/.cache/m2m_tf.

  The folder is not created here (only when something is written).
  """
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
  """Writes `arrays` to `path` (.npz, no pickles): temp file + os.replace."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp",
                                  dir=path.parent)
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp_name, 0o644)  # mkstemp creates 0600
    os.replace(tmp_name, path)
  finally:
    if os.path.exists(tmp_name):
      os.remove(tmp_name)


def _try_load(path: pathlib.Path, key: str) -> Optional[Dict[str, np.ndarray]]:
  """Loads a cache entry, or returns None if it is absent or unreadable."""
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {name: data[name] for name in data.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    _log.warning("Cache file %s is unreadable (%s); rebuilding.", path, e)
    return None
  stored_key = arrays.pop(_KEY_ARRAY, None)
  if stored_key is None or str(stored_key) != key:
    _log.warning("Cache file %s has a different key; rebuilding.", path)
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
  if arrays is not None and all(n in arrays for n in (required or ())):
    return arrays
  arrays = dict(build_fn())
  try:
    save_npz_atomic(path, {**arrays, _KEY_ARRAY: np.array(key)})
  except OSError as e:
    _log.warning("Could not write cache file %s (%s); continuing uncached.",
                 path, e)
  return arrays
