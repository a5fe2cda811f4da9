"""Tests of data_prep.cifar_jpeg on the real JPEG archives (about 10 s)."""

import os
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from data_prep import cifar_jpeg
from data_prep import download
from data_prep import paths
from data_prep import splits


class CifarJpegTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.cache_dir = tempfile.mkdtemp(prefix="m2m_data_prep_test_")
    cls.data = cifar_jpeg.build_cifar10_jpeg_lt(imbalance_ratio=100,
                                                cache_dir=cls.cache_dir)
    cls.root = paths.resolve_data_dir(None)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.cache_dir, ignore_errors=True)
    super().tearDownClass()

  def test_counts_and_splits(self):
    d = self.data
    expected = [int(5000 * 100**(-k / 9)) for k in range(10)]
    self.assertEqual(expected,
                     [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
    self.assertEqual(d.class_counts.tolist(), expected)
    self.assertEqual(d.x_train.shape, (12406, 32, 32, 3))
    self.assertEqual(np.bincount(d.y_val).tolist(), [100] * 10)
    self.assertEqual(np.bincount(d.y_test).tolist(), [900] * 10)
    self.assertEqual(d.x_val.shape, (1000, 32, 32, 3))
    self.assertEqual(d.x_test.shape, (9000, 32, 32, 3))
    for x in (d.x_train, d.x_val, d.x_test):
      self.assertEqual(x.dtype, np.uint8)
    self.assertEqual((d.name, d.input_kind, d.clip_range),
                     ("cifar10_jpeg_lt", "image", (0.0, 1.0)))
    self.assertIn("JPEG substitute", d.label)
    self.assertEqual(d.class_names[0], "airplane")
    self.assertEqual(d.class_names[9], "truck")

  def test_images_are_the_right_files(self):
    d = self.data

    def decode(name, label, number):
      with np.load(self.root / "cifar10_jpeg" / name) as z:
        i = np.flatnonzero((z["labels"] == label) &
                           (z["index_in_class"] == number))[0]
        b = z["jpeg_bytes"][z["offsets"][i]:z["offsets"][i + 1]].tobytes()
      return tf.io.decode_jpeg(b, channels=3,
                               dct_method="INTEGER_ACCURATE").numpy()

    start1 = 5000  # class 1 starts after class 0's 5000 images
    np.testing.assert_array_equal(d.x_train[0], decode("train.npz", 0, 0))
    np.testing.assert_array_equal(d.x_train[start1 + 2996],
                                  decode("train.npz", 1, 2996))
    np.testing.assert_array_equal(d.x_train[-1], decode("train.npz", 9, 49))
    np.testing.assert_array_equal(d.x_val[0], decode("test.npz", 0, 0))
    np.testing.assert_array_equal(d.x_val[199], decode("test.npz", 1, 99))
    np.testing.assert_array_equal(d.x_test[0], decode("test.npz", 0, 100))
    np.testing.assert_array_equal(d.x_test[-1], decode("test.npz", 9, 999))

  def test_cache_hit(self):
    with mock.patch.object(cifar_jpeg, "_build_arrays",
                           side_effect=AssertionError("cache miss")):
      again = cifar_jpeg.build_cifar10_jpeg_lt(imbalance_ratio=100,
                                               cache_dir=self.cache_dir)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
      self.assertEqual(getattr(again, name).tobytes(),
                       getattr(self.data, name).tobytes())

  def test_selection_for_ratio_10_without_decoding(self):
    with np.load(self.root / "cifar10_jpeg/train.npz") as z:
      labels, number = z["labels"], z["index_in_class"]
    counts = [int(5000 * 10**(-k / 9)) for k in range(10)]
    idx = splits.first_per_class(labels, counts, order_key=number)
    self.assertEqual(np.bincount(labels[idx]).tolist(), counts)
    for k in range(10):
      self.assertEqual(sorted(number[idx][labels[idx] == k].tolist()),
                       list(range(counts[k])))

  def test_checksum_mismatch_and_missing(self):
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root, ignore_errors=True)
    os.makedirs(os.path.join(root, "cifar10_jpeg"))
    with self.assertRaisesRegex(paths.DataNotFoundError, "train.npz"):
      cifar_jpeg.build_cifar10_jpeg_lt(root, use_cache=False)
    for name in ("train.npz", "test.npz"):
      with open(os.path.join(root, "cifar10_jpeg", name), "wb") as f:
        f.write(b"not the archive")
    with self.assertRaisesRegex(download.ChecksumError, "train.npz"):
      cifar_jpeg.build_cifar10_jpeg_lt(root, use_cache=False)


if __name__ == "__main__":
  absltest.main()
