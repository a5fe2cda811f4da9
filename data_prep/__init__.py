"""Raw data files -> verified, cached `DatasetSplits` arrays; knows nothing of training. Entry
point: `load_dataset(name, data_dir, **options)`. Names are imported lazily (PEP 562), so
`python -m data_prep.download` runs without importing the builders.
"""

from data_prep.lazy import exports

_EXPORTS = {
    "DataNotFoundError": "data_prep.paths",
    "resolve_data_dir": "data_prep.paths",
    "DATASETS": "data_prep.registry",
    "DatasetSpec": "data_prep.registry",
    "Recipe": "data_prep.recipes",
    "available_datasets": "data_prep.registry",
    "get_recipe": "data_prep.registry",
    "load_dataset": "data_prep.registry",
    "register_dataset": "data_prep.registry",
    "DatasetSplits": "data_prep.splits",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = exports("data_prep", _EXPORTS, globals())
