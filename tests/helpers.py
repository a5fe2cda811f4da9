"""Helpers shared by the test modules (not a test module)."""

import json
import os

import h5py


def h5_arrays(path):
  """Every dataset of a Keras `.weights.h5` file: its path in the file -> array."""
  out = {}
  with h5py.File(path, "r") as fh:
    fh.visititems(lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None)
  return out


def load_results(folder):
  """A run's results.json without its wall-clock fields and its folder (they differ between
  equal runs)."""
  with open(os.path.join(folder, "results.json")) as fh:
    res = json.load(fh)
  res.pop("seconds")
  res.pop("epoch_seconds", None)
  res.pop("output_dir", None)
  return res


# The official M2m g (ResNet-32 trained with ERM on CIFAR-10-LT, ratio 100), PyTorch layout.
OFFICIAL_NPZ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                            "pretrained", "official_erm_resnet32_cifar10lt_r100.npz")


def drop_from_cache_entry(cache_dir, keys):
  """Rewrites the one entry of a data_prep cache folder without `keys`, as an older version of
  the builder wrote it: still valid (its manifest matches), only those arrays are missing."""
  import numpy as np
  from data_prep import cache as cache_lib
  (name,) = os.listdir(cache_dir)
  path = os.path.join(cache_dir, name)
  with np.load(path) as npz:
    arrays = {k: npz[k] for k in npz.files}
  key = arrays.pop("__cache_key__")
  arrays.pop("__cache_manifest__")
  for k in keys:
    arrays.pop(k)
  cache_lib.save_npz_atomic(path, {**arrays, "__cache_key__": key, "__cache_manifest__":
                                   np.array(json.dumps(cache_lib.manifest(arrays)))})


def prepare_tiny_tfds(data_dir, class_name, splits, image):
  """Prepares a tiny TFDS image dataset into `data_dir`, offline (no registration, no network).

  Args:
    data_dir: the TFDS data folder to write.
    class_name: the builder's class name; its snake case is the dataset's TFDS name
      ("UserDataTinyImages" -> "user_data_tiny_images").
    splits: {split name: (start, examples per class)}; 4 classes, cat/dog/eel/fox.
    image: image(start, i, rng) -> uint8 [8, 8, 3], the i-th example of a split.
  """
  import numpy as np
  import tensorflow_datasets as tfds

  def info(self):
    return tfds.core.DatasetInfo(
        builder=self, supervised_keys=("image", "label"),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 3)),
            "label": tfds.features.ClassLabel(names=["cat", "dog", "eel", "fox"])}))

  def split_generators(self, dl_manager):
    del dl_manager
    return {name: self._generate_examples(*spec) for name, spec in splits.items()}

  def generate_examples(self, start, per_class):
    del self
    rng = np.random.default_rng(start)
    for i in range(4 * per_class):
      yield i, {"image": image(start, i, rng), "label": i % 4}

  with tfds.core.registered.skip_registration():
    builder = type(class_name, (tfds.core.GeneratorBasedBuilder,), {
        "VERSION": tfds.core.Version("1.0.0"), "_info": info,
        "_split_generators": split_generators, "_generate_examples": generate_examples})
  builder(data_dir=data_dir).download_and_prepare()


def assert_one_line(test, exc_type, regex, fn, *args, **kwargs):
  """Asserts fn raises exc_type with a one-line message matching regex; returns the message."""
  with test.assertRaisesRegex(exc_type, regex) as ctx:
    fn(*args, **kwargs)
  message = str(ctx.exception)
  test.assertNotIn("\n", message)
  return message
