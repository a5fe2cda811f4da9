"""Raw data files -> verified, cached `DatasetSplits` arrays.

Knows nothing of training. Entry point: `load_dataset(name, data_dir,
**options)`; raw files are found by `resolve_data_dir` (--data_dir,
$M2M_DATA_DIR, or ../shared/data). Nothing is read at import time.

The names below are imported lazily (PEP 562), so that
`python -m data_prep.download` runs without importing the builders first.
"""

import importlib

_EXPORTS = {
    "DataNotFoundError": "data_prep.paths",
    "resolve_data_dir": "data_prep.paths",
    "DATASETS": "data_prep.registry",
    "available_datasets": "data_prep.registry",
    "load_dataset": "data_prep.registry",
    "register_dataset": "data_prep.registry",
    "DatasetSplits": "data_prep.splits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  """Imports an exported name on first use."""
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'data_prep' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_EXPORTS))
