"""A run's data: loaded and checked splits, the training set and its batch stream."""

import numpy as np

from data_prep import streamed
from data_prep.registry import load_dataset
from m2m_tf.config import ExperimentConfig
from m2m_tf.data import pipeline
from m2m_tf.data import streaming
from m2m_tf.errors import DataError
from m2m_tf.smote import smote
from m2m_tf.training.methods import get_method


def load_data(cfg: ExperimentConfig):
  """The dataset's splits (`check_splits`d).

  Raises:
    DataError: one line naming the problem with the data.
  """
  try:
    if cfg.data.streaming:  # the training split stays on disk (docs/data.md#streaming-input)
      data = streamed.load_streamed(cfg.data.dataset, cfg.data.data_dir, **cfg.data.options)
    else:
      data = load_dataset(cfg.data.dataset, cfg.data.data_dir, **cfg.data.options)
  except ValueError as e:
    raise DataError(f"{cfg.data.dataset}: {e}") from None
  check_splits(cfg.data.dataset, data)
  return data


def check_splits(name: str, data) -> None:
  """Refuses splits that would train or evaluate wrongly: empty classes, bad labels, NaN/Inf,
  inputs whose shapes differ between splits.

  Raises:
    DataError: one line naming the dataset, the split and the problem.
  """
  counts = data.class_counts
  if np.any(counts == 0):
    raise DataError(f"{name}: classes {np.flatnonzero(counts == 0).tolist()} have no training "
                    "example.")
  for split in ("train", "val", "test"):
    x, y = getattr(data, f"x_{split}"), np.asarray(getattr(data, f"y_{split}"))
    if len(x) != len(y):
      raise DataError(f"{name}: x_{split} has {len(x)} rows but y_{split} {len(y)} labels.")
    if tuple(x.shape[1:]) != tuple(data.x_train.shape[1:]):
      raise DataError(f"{name}: x_{split} examples have shape {tuple(x.shape[1:])}, x_train's "
                      f"{tuple(data.x_train.shape[1:])}.")
    if len(y) and (y.min() < 0 or y.max() >= data.num_classes):
      raise DataError(f"{name}: y_{split} holds labels outside [0, {data.num_classes}).")
    bad = pipeline.nonfinite_rows(x)
    if bad.size:
      raise DataError(f"{name}: x_{split} has NaN/Inf in {bad.size} examples (first: row "
                      f"{bad[0]}).")


def training_set(cfg: ExperimentConfig, data):
  """(x_train, y_train) the run trains on: the training split, SMOTE-oversampled for smote."""
  x_train, y_train = data.x_train, data.y_train
  if get_method(cfg.training.method).oversample == "smote":
    x_train, y_train = smote(x_train.astype(np.float32), y_train, k_neighbors=5, seed=cfg.seed)
  return x_train, y_train


def train_dataset(cfg: ExperimentConfig, data, x_train, y_train, first: int,
                  input_context=None):
  """The training batches of epochs [first, epochs) (`pipeline.train_dataset`; under
  --streaming the same batches read from disk); `input_context`: this worker's shard."""
  method, s = get_method(cfg.training.method), cfg.schedule
  balanced_from = {"never": None, "start": 0, "deferred": s.deferred_epoch}[method.balanced_from]
  kwargs = dict(num_classes=data.num_classes, batch_size=s.batch_size, seed=cfg.seed,
                epochs=s.epochs, start_epoch=first, balanced_from_epoch=balanced_from,
                epoch_size=len(data.x_train),
                augment=cfg.model.augment and data.input_kind == "image",
                input_context=input_context)
  if data.train_source is not None:
    return streaming.train_dataset(data.train_source, **kwargs)
  return pipeline.train_dataset(x_train, y_train, **kwargs)
