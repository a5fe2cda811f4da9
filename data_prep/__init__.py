"""Raw data files -> verified, cached `DatasetSplits` arrays.

Knows nothing of training. Entry point: `load_dataset(name, data_dir,
**options)`; raw files are found by `resolve_data_dir` (--data_dir,
$M2M_DATA_DIR, or ../shared/data). Nothing is read at import time.
"""

from data_prep.paths import DataNotFoundError
from data_prep.paths import resolve_data_dir
from data_prep.registry import available_datasets
from data_prep.registry import DATASETS
from data_prep.registry import load_dataset
from data_prep.registry import register_dataset
from data_prep.splits import DatasetSplits

__all__ = [
    "DataNotFoundError", "DATASETS", "DatasetSplits", "available_datasets",
    "load_dataset", "register_dataset", "resolve_data_dir",
]
