"""Helpers shared by the end-to-end run tests (not a test module)."""

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
