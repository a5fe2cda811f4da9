"""Tests of data_prep.tfds_images: long-tail/split rules and the TFDS builders
on mocked TFDS data (no network)."""

import os
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from data_prep import paths
from data_prep import registry
from data_prep import splits
from data_prep import tfds_images


def _mock(examples_by_split):
  """An `as_dataset_fn` for tfds.testing.mock_data yielding given examples."""

  def as_dataset(self, split, *args, **kwargs):
    del args, kwargs
    name = str(split)
    rows = []
    for part in name.split("+"):
      rows += examples_by_split[part]
    sig = tf.nest.map_structure(
        lambda v: tf.TensorSpec(np.asarray(v).shape if np.asarray(v).dtype
                                != object else (), tf.as_dtype(
                                    np.asarray(v).dtype) if np.asarray(
                                        v).dtype.kind not in "OSU"
                                else tf.string), rows[0])
    return tf.data.Dataset.from_generator(lambda: iter(rows),
                                          output_signature=sig)

  return tfds.testing.mock_data(as_dataset_fn=as_dataset)


class RulesTest(parameterized.TestCase, tf.test.TestCase):

  def test_first_per_class_follows_order_key(self):
    labels = np.array([1, 0, 1, 0, 1, 0, 1])
    key = np.array([50, 3, 10, 1, 30, 2, 20])
    idx = splits.first_per_class(labels, [2, 3], order_key=key)
    # class 0 by key: idx 3 (1), 5 (2); class 1: idx 2 (10), 6 (20), 4 (30).
    self.assertAllEqual(idx, [3, 5, 2, 6, 4])
    self.assertAllEqual(splits.first_per_class(labels, [1, 1]), [1, 0])

  def test_first_per_class_too_few(self):
    with self.assertRaisesRegex(ValueError, "class 0 has 1 examples"):
      splits.first_per_class(np.array([0, 1, 1]), [2, 1])

  def test_split_eval_per_class(self):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 20)
    key = rng.permutation(200)
    perm = rng.permutation(200)
    labels, key = labels[perm], key[perm]
    by_fraction = splits.split_eval_per_class(labels, 10, val_fraction=0.1, order_key=key)
    by_count = splits.split_eval_per_class(labels, 10, n_val=2, order_key=key)
    for val, test in (by_fraction, by_count):
      self.assertLen(val, 20)
      self.assertLen(test, 180)
      self.assertEmpty(np.intersect1d(val, test))
      for k in range(10):
        members = np.flatnonzero(labels == k)
        first_two = members[np.argsort(key[members])][:2]
        self.assertAllEqual(np.sort(val[labels[val] == k]), np.sort(first_two))
        self.assertEqual((labels[test] == k).sum(), 18)
      # Class by class, each in key order.
      self.assertAllEqual(labels[val], np.repeat(np.arange(10), 2))
      for k in range(10):
        self.assertTrue(np.all(np.diff(key[test[labels[test] == k]]) > 0))
    self.assertAllEqual(by_fraction[0], by_count[0])
    self.assertAllEqual(by_fraction[1], by_count[1])

  def test_split_eval_per_class_takes_one_rule(self):
    labels = np.repeat(np.arange(3), 5)
    for kwargs in ({}, {"val_fraction": 0.2, "n_val": 1}):
      with self.assertRaisesRegex(ValueError, "exactly one"):
        splits.split_eval_per_class(labels, 3, **kwargs)
    with self.assertRaisesRegex(ValueError, "val_fraction"):
      splits.split_eval_per_class(labels, 3, val_fraction=1.0)
    val, test = splits.split_eval_per_class(labels, 3, n_val=9)  # more than a class has
    self.assertLen(val, 15)
    self.assertEmpty(test)

  def test_cifar_counts_ratio_100(self):
    # The official IMBALANCECIFAR10 counts (hand-checked list).
    self.assertAllEqual(splits.long_tail_counts(5000, 10, 100),
                        [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
    counts100 = splits.long_tail_counts(500, 100, 100)
    self.assertEqual(counts100[0], 500)
    self.assertEqual(counts100[-1], 5)
    self.assertEqual(counts100.sum(), 10847)

  def test_sun397_split(self):
    labels = np.repeat([0, 1, 2], [60, 55, 53])
    order = np.arange(len(labels))[::-1]
    tr, va, te = tfds_images.sun397_split(labels, 3, order, holdout=50,
                                          n_val=5)
    self.assertAllEqual(np.bincount(labels[tr]), [10, 5, 3])
    self.assertAllEqual(np.bincount(labels[va]), [5, 5, 5])
    self.assertAllEqual(np.bincount(labels[te]), [45, 45, 45])
    # held out = the first 50 by order key (here: the highest indices).
    self.assertTrue(np.all(order[va[:5]] < order[tr[labels[tr] == 0]].min()))
    self.assertAlmostEqual((2361 - 50) / (100 - 50), 46.22)  # 2311 / 50, float64: exact to 1e-15
    with self.assertRaisesRegex(ValueError, "class 2 has 53"):
      tfds_images.sun397_split(labels, 3, holdout=53)

  def test_celeba5_labels_and_counts(self):
    attrs = {c: np.zeros(7, bool) for c in tfds_images.CELEBA_CLASSES}
    attrs["Gray_Hair"][[0, 1]] = True
    attrs["Black_Hair"][[1, 2, 3]] = True  # image 1 is ambiguous
    attrs["Bald"][4] = True
    labels = tfds_images.celeba5_labels(attrs)
    self.assertAllEqual(labels, [0, -1, 1, 1, 4, -1, -1])
    self.assertAllEqual(
        tfds_images.celeba5_train_counts(np.repeat([0, 1, 4], [41, 39, 20]),
                                         subsample=20), [2, 1, 0, 0, 1])
    # The inferred class order: official train counts = CelebA totals / 20.
    totals = np.array([8499, 48472, 29983, 41572, 4547])
    self.assertAllEqual(totals // 20, [424, 2423, 1499, 2078, 227])  # exact (floor)

  def test_read_split_list(self):
    with tempfile.TemporaryDirectory() as d:
      p = os.path.join(d, "l.txt")
      with open(p, "w") as fh:
        fh.write("train/n01/n01_1.JPEG 0\n\nval/ILSVRC2012_val_7.JPEG 3\n")
      names, labels = tfds_images.read_split_list(p)
      self.assertEqual(names, ["n01_1.JPEG", "ILSVRC2012_val_7.JPEG"])
      self.assertAllEqual(labels, [0, 3])
      with open(p, "a") as fh:
        fh.write("broken line here\n")
      with self.assertRaisesRegex(ValueError, r"l\.txt:4"):
        tfds_images.read_split_list(p)
      with self.assertRaises(paths.DataNotFoundError):
        tfds_images.read_split_list(os.path.join(d, "missing.txt"))

  def test_center_crop_resize(self):
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, 10:50] = 200  # the centre 40x40 square
    out = tfds_images.center_crop_resize(tf.constant(img), 32).numpy()
    self.assertEqual(out.shape, (32, 32, 3))
    self.assertEqual(out.dtype, np.uint8)
    self.assertAllEqual(out, np.full_like(out, 200))
    img[:, 5:55] = 200  # resize blurs the edge; keep it outside the crop
    out = tfds_images.shorter_side_center_crop(tf.constant(img), 20).numpy()
    self.assertEqual(out.shape, (20, 20, 3))
    self.assertAllEqual(out, np.full_like(out, 200))


class BuildersTest(parameterized.TestCase, tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp(dir=self.get_temp_dir())

  def test_registered_with_recipes(self):
    for name in ("cifar10_lt", "cifar100_lt", "celeba5", "sun397",
                 "imagenet_lt"):
      self.assertIn(name, registry.available_datasets())
      self.assertIsNotNone(registry.DATASETS[name].recipe)

  def test_not_prepared_is_clear(self):
    with self.assertRaisesRegex(paths.DataNotFoundError,
                                "not prepared.*--prepare cifar10"):
      registry.load_dataset("cifar10_lt", tfds_data_dir=self.tmp)

  def test_unknown_option(self):
    with self.assertRaisesRegex(ValueError, "does not take option"):
      registry.load_dataset("celeba5", imbalance_ratio=10)

  @parameterized.parameters(("cifar10_lt", 10, 20, 10), ("cifar100_lt", 100,
                                                           4, 4))
  def test_cifar_lt(self, name, k, n_max, ratio):
    rng = np.random.default_rng(1)
    per_class = n_max + 2
    n = k * per_class
    train_orig = np.arange(n)
    labels = train_orig % k
    rows = []
    for i in rng.permutation(n):  # TFDS stores examples shuffled
      row = {"id": f"train_{i:05d}".encode(),
             "image": np.full((32, 32, 3), i % 251, np.uint8),
             "label": np.int64(labels[i])}
      if k == 100:
        row["coarse_label"] = np.int64(labels[i] // 5)
      rows.append(row)
    test_rows = []
    n_test = k * 10
    for i in rng.permutation(n_test):
      row = {"id": f"test_{i:05d}".encode(),
             "image": np.full((32, 32, 3), i % 251, np.uint8),
             "label": np.int64(i % k)}
      if k == 100:
        row["coarse_label"] = np.int64((i % k) // 5)
      test_rows.append(row)
    with _mock({"train": rows, "test": test_rows}):
      data = registry.load_dataset(name, tfds_data_dir=self.tmp,
                                   imbalance_ratio=ratio, n_max=n_max)
    counts = splits.long_tail_counts(n_max, k, ratio)
    self.assertAllEqual(data.class_counts, counts)
    self.assertEqual(data.x_train.dtype, np.uint8)
    self.assertEqual(data.input_kind, "image")
    self.assertEqual(data.clip_range, (0.0, 1.0))
    self.assertEqual(data.num_classes, k)
    # The kept images are the first n_k of each class in the ORIGINAL order:
    # original index i of class c is c + k * j, j = 0.. -> pixel (i % 251).
    for c in (0, k - 1):
      expected = [(c + k * j) % 251 for j in range(counts[c])]
      self.assertAllEqual(data.x_train[data.y_train == c][:, 0, 0, 0],
                          expected)
    self.assertLen(data.y_val, k)  # 10% of 10 per class
    self.assertLen(data.y_test, 9 * k)
    self.assertAllEqual(np.bincount(data.y_val, minlength=k), np.ones(k))
    # validation = test images with the smallest original index per class.
    self.assertAllEqual(data.x_val[:, 0, 0, 0], np.arange(k) % 251)

  def test_celeba5(self):
    rng = np.random.default_rng(2)
    heads = tfds_images.CELEBA_CLASSES

    def rows(sizes, tag):
      out = []
      labels = np.repeat(np.arange(-1, 5), sizes)
      for j, lab in enumerate(rng.permutation(labels)):
        attrs = {a: False for a in
                 tfds.builder("celeb_a").info.features["attributes"].keys()}
        if lab >= 0:
          attrs[heads[lab]] = True
        out.append({"image": np.full((218, 178, 3), (j + tag) % 200,
                                     np.uint8),
                    "attributes": attrs,
                    "landmarks": {n: np.int64(0) for n in tfds.builder(
                        "celeb_a").info.features["landmarks"].keys()},
                    "identity": {"Identity_No": np.int64(0)}})
      return out

    with _mock({"train": rows([7, 12, 30, 20, 25, 4], 0),
                "validation": rows([3, 3, 3, 3, 3, 3], 1),
                "test": rows([1, 4, 4, 4, 4, 4], 2)}):
      data = registry.load_dataset("celeba5", tfds_data_dir=self.tmp,
                                   subsample=4, val_per_class=2,
                                   test_per_class=3)
    self.assertAllEqual(data.class_counts, [3, 7, 5, 6, 1])  # floor(n/4)
    self.assertAllEqual(np.bincount(data.y_val), [2] * 5)
    self.assertAllEqual(np.bincount(data.y_test), [3] * 5)
    self.assertEqual(data.x_train.shape[1:], (32, 32, 3))
    self.assertEqual(data.class_names, heads)

  def test_sun397(self):
    rng = np.random.default_rng(3)
    sizes = np.full(397, 3)
    sizes[0], sizes[5] = 9, 5
    labels = np.repeat(np.arange(397), sizes)
    rows = []
    for j in rng.permutation(len(labels)):
      rows.append({"file_name": f"img_{j:05d}.jpg".encode(),
                   "image": np.full((6, 10, 3), j % 250, np.uint8),
                   "label": np.int64(labels[j])})
    third = len(rows) // 3
    with _mock({"train": rows[:third], "validation": rows[third:2 * third],
                "test": rows[2 * third:]}):
      data = registry.load_dataset("sun397", tfds_data_dir=self.tmp,
                                   holdout=2, n_val=1)
    self.assertEqual(data.num_classes, 397)
    expected = sizes - 2
    self.assertAllEqual(data.class_counts, expected)
    self.assertAllEqual(np.bincount(data.y_val, minlength=397), np.ones(397))
    self.assertAllEqual(np.bincount(data.y_test, minlength=397), np.ones(397))
    self.assertEqual(data.x_train.shape[1:], (32, 32, 3))
    # Class 0's validation image is its first by file name (index 0).
    self.assertEqual(data.x_val[data.y_val == 0][0, 0, 0, 0], 0)

  def test_imagenet_lt(self):
    def rows(names, base):
      return [{"file_name": n.encode(),
               "image": np.full((20, 30, 3), base + i, np.uint8),
               "label": np.int64(i % 1000)} for i, n in enumerate(names)]

    train_names = [f"n{i:02d}_{i}.JPEG" for i in range(30)]
    val_names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(12)]
    lists = os.path.join(self.tmp, "lists")
    os.makedirs(lists)
    picks = {"ImageNet_LT_train.txt": [(train_names[i], i % 3) for i in
                                       (4, 1, 9, 20, 21)],
             "ImageNet_LT_val.txt": [(train_names[i], 1) for i in (7, 8)],
             "ImageNet_LT_test.txt": [(val_names[i], 2) for i in (11, 0, 5)]}
    for fname, items in picks.items():
      with open(os.path.join(lists, fname), "w") as fh:
        for n, lab in items:
          fh.write(f"split/{n.split('_')[0]}/{n} {lab}\n")
    with _mock({"train": rows(train_names, 0),
                "validation": rows(val_names, 100)}):
      data = registry.load_dataset("imagenet_lt", tfds_data_dir=self.tmp,
                                   imagenet_lt_dir=lists, image_size=16)
    self.assertEqual(data.num_classes, 1000)
    self.assertAllEqual(data.y_train, [1, 1, 0, 2, 0])
    self.assertAllEqual(data.x_train[:, 0, 0, 0], [4, 1, 9, 20, 21])
    self.assertAllEqual(data.x_val[:, 0, 0, 0], [7, 8])
    self.assertAllEqual(data.x_test[:, 0, 0, 0], [111, 100, 105])
    self.assertEqual(data.x_test.shape[1:], (16, 16, 3))


if __name__ == "__main__":
  tf.test.main()
