"""CIFAR-10-LT from the JPEG re-encoded CIFAR-10 copy, a lossy substitute labelled as such: the
official CIFAR-10-LT split, images decoded exactly as PIL does. See
docs/data.md#cifar-10-jpeg-substitute.
"""

import os
from typing import Dict, Optional, Union

import numpy as np

from data_prep import cache as cache_lib
from data_prep import download
from data_prep import paths
from data_prep import splits

TRAIN_FILE = "cifar10_jpeg/train.npz"
TEST_FILE = "cifar10_jpeg/test.npz"
BUILDER_VERSION = "cifar10_jpeg_lt-v1"
N_MAX = 5000
VAL_PER_CLASS = 100
LABEL = ("CIFAR-10 JPEG substitute (lossy re-encoding; not comparable to the "
         "paper to the decimal)")
_ARRAYS = ("jpeg_bytes", "offsets", "labels", "index_in_class", "class_names")


def load_jpeg_archive(path: Union[str, os.PathLike]) -> Dict[str, np.ndarray]:
  """Loads and checks one packed JPEG archive (no pickles).

  Raises:
    ValueError: naming the file, when an array is missing or inconsistent.
  """
  with np.load(path, allow_pickle=False) as data:
    missing = [a for a in _ARRAYS if a not in data.files]
    if missing:
      raise ValueError(f"{path}: missing arrays {missing}")
    arrays = {a: data[a] for a in _ARRAYS}
  n = len(arrays["labels"])
  offsets = arrays["offsets"]
  if (len(offsets) != n + 1 or len(arrays["index_in_class"]) != n or
      offsets[0] != 0 or offsets[-1] != len(arrays["jpeg_bytes"]) or
      np.any(np.diff(offsets) <= 0)):
    raise ValueError(f"{path}: offsets/labels/index_in_class are inconsistent")
  return arrays


def decode_jpegs(archive: Dict[str, np.ndarray],
                 indices: np.ndarray) -> np.ndarray:
  """Decodes the selected images to uint8 [n, 32, 32, 3] (parallel tf.data)."""
  import tensorflow as tf  # lazy: TensorFlow loads only when used
  jpeg, offsets = archive["jpeg_bytes"], archive["offsets"]
  blobs = [jpeg[offsets[i]:offsets[i + 1]].tobytes() for i in indices]
  if not blobs:
    return np.zeros((0, 32, 32, 3), np.uint8)
  ds = tf.data.Dataset.from_tensor_slices(tf.constant(blobs, dtype=tf.string))
  ds = ds.map(lambda b: tf.io.decode_jpeg(b, channels=3,
                                          dct_method="INTEGER_ACCURATE"),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  images = np.concatenate([b.numpy() for b in ds.batch(2048)])
  if images.shape[1:] != (32, 32, 3):
    raise ValueError(f"decoded images have shape {images.shape[1:]}, "
                     "expected (32, 32, 3)")
  return images


def split_indices(train: Dict[str, np.ndarray], test: Dict[str, np.ndarray],
                  imbalance_ratio: float):
  """(train, val, test) indices into the two archives (docs/data.md#cifar-10-jpeg-substitute)."""
  num_classes = len(train["class_names"])
  counts = splits.long_tail_counts(N_MAX, num_classes, imbalance_ratio)
  train_idx = splits.first_per_class(train["labels"], counts,
                                     order_key=train["index_in_class"])
  val_idx, test_idx = splits.split_eval_per_class(
      test["labels"], num_classes, n_val=VAL_PER_CLASS,
      order_key=test["index_in_class"])
  return train_idx, val_idx, test_idx


def _build_arrays(train_path, test_path, imbalance_ratio) -> Dict[str,
                                                                  np.ndarray]:
  """Selects the long-tailed train set and the val/test split, then decodes."""
  train = load_jpeg_archive(train_path)
  test = load_jpeg_archive(test_path)
  train_idx, val_idx, test_idx = split_indices(train, test, imbalance_ratio)
  return {
      "x_train": decode_jpegs(train, train_idx),
      "y_train": train["labels"][train_idx].astype(np.int64),
      "x_val": decode_jpegs(test, val_idx),
      "y_val": test["labels"][val_idx].astype(np.int64),
      "x_test": decode_jpegs(test, test_idx),
      "y_test": test["labels"][test_idx].astype(np.int64),
      "class_names": np.asarray(train["class_names"], dtype=np.str_),
  }


def build_cifar10_jpeg_lt(data_dir: Optional[Union[str, os.PathLike]] = None,
                          *, imbalance_ratio: float = 100,
                          cache_dir: Optional[Union[str, os.PathLike]] = None,
                          use_cache: bool = True,
                          verify_checksums: bool = True
                          ) -> splits.DatasetSplits:
  """Builds CIFAR-10-LT from the JPEG substitute (docs/data.md#cifar-10-jpeg-substitute); only
  the kept images are decoded.

  Args:
    data_dir: the data root holding `cifar10_jpeg/`.
    imbalance_ratio: N_max / N_min (100 or 10 in the paper).
    cache_dir: see `cache.resolve_cache_dir`; the decoded arrays are cached.
    use_cache: read/write the decoded arrays from/to the cache.
    verify_checksums: check the archives' sha256 (docs/data.md#checksums) first.
  Returns:
    DatasetSplits named "cifar10_jpeg_lt", uint8 NHWC, input_kind "image",
    clip_range (0, 1), labelled as a lossy substitute.
  """
  root = paths.resolve_data_dir(data_dir)
  files, digests = download.checked_raw_files(root, (TRAIN_FILE, TEST_FILE),
                                              verify_checksums)
  options = dict(imbalance_ratio=float(imbalance_ratio))
  arrays = cache_lib.cached_arrays(
      "cifar10_jpeg_lt", BUILDER_VERSION, digests, options,
      lambda: _build_arrays(files[0], files[1], float(imbalance_ratio)),
      cache_dir=cache_dir, use_cache=use_cache)
  return splits.from_arrays(
      "cifar10_jpeg_lt", arrays, input_kind="image", clip_range=(0.0, 1.0), label=LABEL)
