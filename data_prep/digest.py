"""Content digests of a dataset, independent of where its files lie: what a run on your own data
records and resumes on (docs/data.md#your-own-data, "Content digest").
"""

import hashlib
import json

import numpy as np

from data_prep import cache
from data_prep import splits

SPLIT_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def _train_source_record(source) -> dict:
  """A streamed training split (`tfrecord_dir.TrainSource`) by its index and pixel moments:
  the labels, every record's size, the image shape, encoding and per-channel mean/std (the
  records' bytes themselves are not read: that would be a pass over the whole split)."""
  return {"labels": cache.array_digest(np.asarray(source.index.labels)),
          "lengths": cache.array_digest(np.asarray(source.index.length)),
          "image_shape": list(source.image_shape), "encoding": source.encoding,
          "normalization": [list(map(float, part)) for part in source.normalization]}


def _clip_record(clip_range):
  if clip_range is None:
    return None
  return [cache.array_digest(np.asarray(bound, np.float64)) for bound in clip_range]


def data_digest(data: splits.DatasetSplits) -> str:
  """Hex sha256 of a `DatasetSplits`' content: every split's inputs and labels (dtype, shape,
  bytes), class names, input kind and clip range; not the name or label (they hold paths). A
  streamed training split counts by `_train_source_record`.
  """
  record = {name: cache.array_digest(np.asarray(getattr(data, name))) for name in SPLIT_ARRAYS
            if not (name == "x_train" and data.train_source is not None)}
  if data.train_source is not None:
    record["train_source"] = _train_source_record(data.train_source)
  record.update(class_names=[str(c) for c in data.class_names], input_kind=data.input_kind,
                clip_range=_clip_record(data.clip_range))
  text = json.dumps(record, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()
