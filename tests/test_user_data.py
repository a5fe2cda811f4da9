"""Tests of the user data layer: npz:, csv:, folder:, tfds: sources (data_prep/user_data.py).

References are independent of the code under test: the long-tail counts are
written out from the formula, the hold-out sizes recomputed per class, the
clip range is NumPy's min / max, and M2m's translation with per-feature bounds
is checked against a float64 NumPy re-implementation for linear g and f.
"""

import pathlib
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
import tensorflow as tf
import tensorflow_datasets as tfds

from data_prep import cifar_jpeg
from data_prep import normalization
from data_prep import paths
from data_prep import recipes
from data_prep import registry
from data_prep import user_data
from data_prep import user_images
from data_prep import user_sources
from data_prep import user_splits
from m2m_tf.errors import ConfigError, DataError
import helpers
from m2m_tf.m2m import generation
from m2m_tf.m2m.translation import translate


def _tmpdir(test):
  path = tempfile.mkdtemp(prefix="m2m_user_data_test_")
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return pathlib.Path(path)


def _exp_counts(n_max, k, ratio):
  """The CIFAR-LT formula, written out: int(n_max * (1/ratio)^(i/(K-1))), at least 1."""
  return [max(1, int(n_max * (1.0 / ratio) ** (i / (k - 1.0)))) for i in range(k)]


def _long_tailed_digits():
  """sklearn's bundled digits (no network) made long-tailed, ratio 10: class k keeps its
  first int(174 * 10^(-k/9)) images (counts 174 ... 17)."""
  digits = load_digits()
  x, y = digits.data.astype(np.float64), digits.target.astype(np.int64)
  keep = np.concatenate([np.flatnonzero(y == k)[:n] for k, n in
                         enumerate(_exp_counts(174, 10, 10))])
  return x[keep], y[keep]


_one_line = helpers.assert_one_line


class DigitsTest(parameterized.TestCase):
  """Long-tailed digits through npz and csv."""

  def setUp(self):
    super().setUp()
    self.dir = _tmpdir(self)
    self.x, self.y = _long_tailed_digits()
    self.npz = self.dir / "digits.npz"
    np.savez(self.npz, x_train=self.x, y_train=self.y)
    frame = pd.DataFrame(self.x, columns=[f"px{i}" for i in range(64)])
    frame.insert(10, "digit", self.y)  # the label column in the middle, chosen by name
    self.csv = self.dir / "digits.csv"
    frame.to_csv(self.csv, index=False)

  def test_npz_hold_outs_and_clip_range(self):
    data = registry.load_dataset(f"npz:{self.npz}")
    counts = np.bincount(self.y)
    n_test = [min(n - 1, max(1, round(0.2 * n))) for n in counts]
    rest = counts - n_test
    n_val = [min(n - 1, max(1, round(0.1 * n))) for n in rest]
    np.testing.assert_array_equal(np.bincount(data.y_test), n_test)
    np.testing.assert_array_equal(np.bincount(data.y_val), n_val)
    np.testing.assert_array_equal(data.class_counts, rest - n_val)
    # The three splits partition the data: the same multiset of (label, row).
    def rows(x, y):
      a = np.concatenate([y[:, None].astype(np.float64), x], axis=1)
      return a[np.lexsort(a.T[::-1])]
    got = rows(np.concatenate([data.x_train, data.x_val, data.x_test]),
               np.concatenate([data.y_train, data.y_val, data.y_test]))
    np.testing.assert_array_equal(got, rows(self.x, self.y))
    self.assertEqual(data.input_kind, "features")
    self.assertEqual(data.x_train.dtype, np.float32)
    self.assertEqual(data.class_names, tuple(str(k) for k in range(10)))
    np.testing.assert_array_equal(data.clip_range[0], data.x_train.min(axis=0))
    np.testing.assert_array_equal(data.clip_range[1], data.x_train.max(axis=0))

  def test_csv_equals_npz(self):
    from_npz = registry.load_dataset(f"npz:{self.npz}", split_seed=3)
    from_csv = registry.load_dataset(f"csv:{self.csv}", label_column="digit", split_seed=3)
    for split in ("train", "val", "test"):
      np.testing.assert_array_equal(getattr(from_csv, f"x_{split}"),
                                    getattr(from_npz, f"x_{split}"))
      np.testing.assert_array_equal(getattr(from_csv, f"y_{split}"),
                                    getattr(from_npz, f"y_{split}"))
    # The label column by index, and a different split seed gives a different split.
    by_index = registry.load_dataset(f"csv:{self.csv}", label_column=10)
    self.assertFalse(np.array_equal(by_index.y_val, from_csv.y_val) and
                     np.array_equal(by_index.x_val, from_csv.x_val))

  def test_csv_without_header_and_with_test_file(self):
    frame = pd.DataFrame(self.x)
    frame["label"] = np.asarray(["zero", "one", "two", "three", "four", "five", "six", "seven",
                                 "eight", "nine"])[self.y]
    test_rows = np.arange(len(frame)) % 5 == 0
    frame[~test_rows].to_csv(self.dir / "train.csv", index=False, header=False)
    frame[test_rows].to_csv(self.dir / "test.csv", index=False, header=False)
    data = registry.load_dataset(f"csv:{self.dir / 'train.csv'},{self.dir / 'test.csv'}")
    self.assertEqual(data.class_names, tuple(sorted(set(frame["label"]))))
    np.testing.assert_array_equal(data.x_test, self.x[test_rows].astype(np.float32))
    names = np.asarray(data.class_names)
    np.testing.assert_array_equal(names[data.y_test], frame["label"].to_numpy()[test_rows])
    self.assertEqual(len(data.y_train) + len(data.y_val), (~test_rows).sum())

  def test_csv_header_of_integer_column_names(self):
    # pandas writes a DataFrame's integer column names as a numeric first line: the label
    # column's name marks it as a header.
    frame = pd.DataFrame(self.x)
    frame["label"] = self.y
    frame.to_csv(self.dir / "pandas.csv", index=False)
    data = registry.load_dataset(f"csv:{self.dir / 'pandas.csv'}", label_column="label",
                                 split_seed=3)
    from_npz = registry.load_dataset(f"npz:{self.npz}", split_seed=3)
    np.testing.assert_array_equal(data.x_train, from_npz.x_train)

  def test_suggest_recipe_features(self):
    data = registry.load_dataset(f"npz:{self.npz}")
    recipe = recipes.suggest_recipe(data)
    self.assertEqual(recipe.arch, "mlp")
    self.assertEqual(recipe.deferred_epoch, round(0.8 * recipe.epochs))
    self.assertEqual(recipe.milestones[0], recipe.deferred_epoch)
    spread = np.sqrt(np.var(data.x_train.astype(np.float64), axis=0).sum())
    self.assertAlmostEqual(recipe.step_size, 0.1 * spread, delta=0.1 * spread * 0.05)
    mean, std = normalization.input_normalization(data)
    np.testing.assert_allclose(mean, data.x_train.astype(np.float64).mean(axis=0), rtol=1e-12)
    want_std = data.x_train.astype(np.float64).std(axis=0)
    self.assertEqual(want_std[0], 0.0)  # digits' first pixel is always 0: its std becomes 1
    np.testing.assert_allclose(std, np.where(want_std == 0, 1.0, want_std), rtol=1e-12)

  @parameterized.parameters("exp", "step")
  def test_long_tail_of_a_balanced_split(self, profile):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 40)
    x = np.column_stack([np.arange(200), rng.normal(size=200)])  # column 0: original index
    np.savez(self.dir / "bal.npz", x_train=x, y_train=y, x_val=x[:10], y_val=y[:10],
             x_test=x[:10], y_test=y[:10])
    data = registry.load_dataset(f"npz:{self.dir / 'bal.npz'}", imbalance_ratio=10,
                                 imbalance_profile=profile)
    want = _exp_counts(40, 5, 10) if profile == "exp" else [40, 40, 4, 4, 4]
    np.testing.assert_array_equal(data.class_counts, want)
    for k, n in enumerate(want):  # the FIRST n examples of each class, in array order
      np.testing.assert_array_equal(np.sort(data.x_train[data.y_train == k, 0]),
                                    np.arange(40 * k, 40 * k + n))
    self.assertIn("long tail", data.label)

  def test_labels_sorted_numerically_and_by_string(self):
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    np.savez(self.dir / "ints.npz", x_train=x, y_train=[10, 3, 7, 10, 3, 7], x_val=x[:3],
             y_val=[3, 7, 10], x_test=x[:3], y_test=[10, 10, 3])
    data = registry.load_dataset(f"npz:{self.dir / 'ints.npz'}")
    self.assertEqual(data.class_names, ("3", "7", "10"))
    np.testing.assert_array_equal(data.y_train, [2, 0, 1, 2, 0, 1])
    np.testing.assert_array_equal(data.y_test, [2, 2, 0])
    np.savez(self.dir / "strs.npz", x_train=x, y_train=["b", "a", "c", "b", "a", "c"],
             x_val=x[:3], y_val=["c", "a", "b"], x_test=x[:3], y_test=["a", "a", "c"],
             class_names=["c", "b", "a"])  # the data's own class order wins
    data = registry.load_dataset(f"npz:{self.dir / 'strs.npz'}", clip="none")
    self.assertEqual(data.class_names, ("c", "b", "a"))
    np.testing.assert_array_equal(data.y_train, [1, 2, 0, 1, 2, 0])
    self.assertIsNone(data.clip_range)
    data = registry.load_dataset(f"npz:{self.dir / 'strs.npz'}", clip="global")
    self.assertEqual(data.clip_range, (0.0, 11.0))

  def test_label_types(self):
    where = {"train": "f", "test": "g"}
    y, names = user_splits.encode_labels(
        {"train": np.asarray([b"b", b"a", b"b"], object), "test": np.asarray(["a"])}, where)
    self.assertEqual(names, ("a", "b"))
    np.testing.assert_array_equal(y["train"], [1, 0, 1])
    y, names = user_splits.encode_labels({"train": np.asarray([2.0, 1.0]),
                                          "test": np.asarray([2], np.uint8)}, where)
    self.assertEqual(names, ("1", "2"))
    np.testing.assert_array_equal(y["test"], [1])
    _one_line(self, DataError, "g: labels are strings but the training labels are integers",
              user_splits.encode_labels, {"train": np.asarray([1]), "test": np.asarray(["1"])},
              where)

  def test_small_class_stays_in_training(self):
    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    y = np.asarray([0] * 19 + [1])
    np.savez(self.dir / "small.npz", x_train=x, y_train=y)
    with self.assertLogs(level="WARNING") as logs:
      data = registry.load_dataset(f"npz:{self.dir / 'small.npz'}")
    self.assertIn("fewer than 2", "".join(logs.output))
    np.testing.assert_array_equal(data.class_counts, [19 - 4 - 2, 1])
    self.assertNotIn(1, data.y_val)
    self.assertNotIn(1, data.y_test)


class ImageArraysTest(parameterized.TestCase):

  @parameterized.parameters((28, "resnet32"), (64, "preact_resnet18"), (96, "resnet50"))
  def test_grayscale_gets_a_channel_and_arch_follows_size(self, side, arch):
    tmp = _tmpdir(self)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(40, side, side), dtype=np.uint8)
    y = np.repeat([0, 1], 20)
    np.savez(tmp / "img.npz", x_train=x, y_train=y)
    data = registry.load_dataset(f"npz:{tmp / 'img.npz'}")
    self.assertEqual(data.input_shape, (side, side, 1))
    self.assertEqual(data.input_kind, "image")
    self.assertEqual(data.clip_range, (0.0, 1.0))
    recipe = recipes.suggest_recipe(data)
    self.assertEqual(recipe.arch, arch)
    self.assertTrue(recipe.augment)
    mean, std = normalization.input_normalization(data)
    self.assertAlmostEqual(mean[0], data.x_train.mean() / 255.0, places=6)
    self.assertAlmostEqual(std[0], (data.x_train / 255.0).std(), places=6)

  def test_float_images_are_kept(self):
    tmp = _tmpdir(self)
    x = np.linspace(0, 1, 20 * 4 * 4 * 3).reshape(20, 4, 4, 3)
    np.savez(tmp / "f.npz", x_train=x, y_train=np.repeat([0, 1], 10))
    data = registry.load_dataset(f"npz:{tmp / 'f.npz'}", val_fraction=0.2, test_fraction=0.2)
    self.assertEqual(data.x_train.dtype, np.float32)
    self.assertEqual(len(data.y_train) + len(data.y_val) + len(data.y_test), 20)


def _cifar_images(n_classes, per_class):
  """(class name, JPEG bytes) from the CIFAR-10 JPEG copy, or made here if it is absent."""
  try:
    archive = cifar_jpeg.load_jpeg_archive(
        paths.resolve_data_dir() / "cifar10_jpeg" / "test.npz")
  except (paths.DataNotFoundError, FileNotFoundError):
    rng = np.random.default_rng(0)
    return [(f"class{k}", tf.io.encode_jpeg(rng.integers(0, 256, (32, 32, 3), np.uint8)).numpy())
            for k in range(n_classes) for _ in range(per_class)]
  out = []
  for k in range(n_classes):
    for i in np.flatnonzero(archive["labels"] == k)[:per_class]:
      blob = archive["jpeg_bytes"][archive["offsets"][i]:archive["offsets"][i + 1]].tobytes()
      out.append((str(archive["class_names"][k]), blob))
  return out


class FolderTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = _tmpdir(self)
    self.images = _cifar_images(3, 6)

  def _write(self, root, images):
    for i, (name, blob) in enumerate(images):
      (root / name).mkdir(parents=True, exist_ok=True)
      (root / name / f"{i:04d}.jpg").write_bytes(blob)

  def test_flat_folder_with_hold_outs(self):
    root = self.tmp / "flat"
    self._write(root, self.images)
    (root / self.images[0][0] / "notes.txt").write_text("not an image")
    data = registry.load_dataset(f"folder:{root}", use_cache=False)
    self.assertEqual(data.class_names, tuple(sorted({n for n, _ in self.images})))
    self.assertEqual(data.input_shape, (32, 32, 3))
    self.assertEqual(data.x_train.dtype, np.uint8)
    # 6 per class: 1 test (round(1.2)), then 1 validation (max(1, round(0.5))), 4 train.
    np.testing.assert_array_equal(data.class_counts, [4, 4, 4])
    self.assertLen(data.y_test, 3)
    # Pixels are TF's decode of the file, exactly.
    first = tf.io.decode_image(self.images[0][1], channels=3).numpy()
    self.assertTrue(any(np.array_equal(first, img) for img in
                        np.concatenate([data.x_train, data.x_val, data.x_test])))

  def test_split_folders_resize_and_cache(self):
    root = self.tmp / "tree"
    self._write(root / "train", self.images)
    self._write(root / "test", self.images[::3])
    big = tf.image.resize(tf.io.decode_image(self.images[0][1], channels=3), [48, 60])
    (root / "train" / self.images[0][0] / "big.png").write_bytes(
        tf.io.encode_png(tf.cast(tf.round(big), tf.uint8)).numpy())
    cache_dir = self.tmp / "cache"
    data = registry.load_dataset(f"folder:{root}", cache_dir=str(cache_dir), image_size=16)
    self.assertEqual(data.input_shape, (16, 16, 3))
    self.assertLen(data.y_test, 6)
    self.assertEqual(data.class_counts.sum() + len(data.y_val), 19)
    self.assertLen(list(cache_dir.glob("user_folder-*.npz")), 1)
    # Sizes differ and no image_size: the standard side not above the median shorter side.
    self.assertEqual(registry.load_dataset(f"folder:{root}", use_cache=False).input_shape,
                     (32, 32, 3))
    # A changed file changes the cache key (size and mtime), so the result follows it.
    (root / "train" / self.images[0][0] / "big.png").unlink()
    again = registry.load_dataset(f"folder:{root}", cache_dir=str(cache_dir), image_size=16)
    self.assertEqual(again.class_counts.sum() + len(again.y_val), 18)
    self.assertLen(list(cache_dir.glob("user_folder-*.npz")), 2)

  def test_choose_image_size(self):
    self.assertIsNone(user_images.choose_image_size([(20, 30)] * 3))
    self.assertEqual(user_images.choose_image_size([(20, 30)] * 3, 24), 24)
    self.assertEqual(user_images.choose_image_size([(20, 30), (40, 40), (100, 90)]), 32)
    self.assertEqual(user_images.choose_image_size([(70, 80), (100, 90), (500, 300)]), 64)
    self.assertEqual(user_images.choose_image_size([(200, 300), (130, 140)]), 128)


class TinyTfdsTest(absltest.TestCase):
  """A tiny TFDS dataset prepared into a temporary folder (no network), read back from its
  files as an unregistered dataset would be."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tfds_dir = tempfile.mkdtemp(prefix="m2m_user_tfds_")
    # Pixel value = example number (+ the split's start), 30 per class in train.
    helpers.prepare_tiny_tfds(cls.tfds_dir, "UserDataTinyImages",
                              {"train": (0, 30), "test": (120, 5)},
                              lambda start, i, rng: np.full((8, 8, 3), start + i, np.uint8))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tfds_dir, ignore_errors=True)
    super().tearDownClass()

  def test_long_tail_from_prepared_files(self):
    data = registry.load_dataset("tfds:user_data_tiny_images", tfds_data_dir=self.tfds_dir,
                                 imbalance_ratio=9, use_cache=False)
    self.assertEqual(data.class_names, ("cat", "dog", "eel", "fox"))
    self.assertLen(data.y_test, 20)
    # 30 per class, 3 held out for validation, then exp counts from n_max = 27.
    np.testing.assert_array_equal(np.bincount(data.y_val), [3, 3, 3, 3])
    np.testing.assert_array_equal(data.class_counts, _exp_counts(27, 4, 9))
    # The kept images are the first of each class in TFDS's stored order, without the
    # validation ones.
    ds = tfds.builder("user_data_tiny_images", data_dir=self.tfds_dir).as_dataset(
        split="train", shuffle_files=False)
    stored = [(int(e["image"][0, 0, 0]), int(e["label"])) for e in ds.as_numpy_iterator()]
    val = set(data.x_val[:, 0, 0, 0].tolist())
    for k, n in enumerate(_exp_counts(27, 4, 9)):
      want = [v for v, label in stored if label == k and v not in val][:n]
      self.assertCountEqual(data.x_train[data.y_train == k, 0, 0, 0].tolist(), want)

  def test_not_prepared(self):
    message = _one_line(self, user_sources.MissingFileError, "not prepared",
                        registry.load_dataset, "tfds:mnist", tfds_data_dir=self.tfds_dir)
    self.assertIn(self.tfds_dir, message)


class BadInputTest(parameterized.TestCase):
  """Every bad input gets one line naming the file and the problem."""

  def setUp(self):
    super().setUp()
    self.tmp = _tmpdir(self)
    self.x = np.arange(40, dtype=np.float64).reshape(10, 4)
    self.y = np.repeat([0, 1], 5)

  def _npz(self, **arrays):
    path = self.tmp / "bad.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"

  def test_class_missing_from_train(self):
    spec = self._npz(x_train=self.x, y_train=self.y, class_names=["a", "b", "c"])
    _one_line(self, DataError, r"bad\.npz.*\['c'\] have no training example",
              registry.load_dataset, spec)

  def test_labels_neither_integers_nor_strings(self):
    spec = self._npz(x_train=self.x, y_train=self.y + 0.5)
    _one_line(self, DataError, r"bad\.npz.*integers or strings.*0\.5",
              registry.load_dataset, spec)

  def test_nan_features(self):
    x = self.x.copy()
    x[3, 2] = np.nan
    _one_line(self, DataError, r"bad\.npz \(x_train.*NaN or Inf.*row 3 column 2",
              registry.load_dataset, self._npz(x_train=x, y_train=self.y))

  def test_inf_in_csv(self):
    frame = pd.DataFrame(self.x, columns=list("abcd"))
    frame["label"] = self.y
    frame.loc[4, "c"] = np.inf
    frame.to_csv(self.tmp / "inf.csv", index=False)
    _one_line(self, DataError, r"inf\.csv.*NaN or Inf.*column 'c' on line 6",
              registry.load_dataset, f"csv:{self.tmp / 'inf.csv'}")

  def test_mismatched_shapes(self):
    spec = self._npz(x_train=self.x, y_train=self.y, x_test=self.x[:, :3], y_test=self.y)
    _one_line(self, DataError, r"bad\.npz \(x_test.*shape \(3,\).*\(4,\)",
              registry.load_dataset, spec)

  def test_mismatched_csv_columns(self):
    pd.DataFrame({"a": [1, 2], "label": [0, 1]}).to_csv(self.tmp / "tr.csv", index=False)
    pd.DataFrame({"b": [1, 2], "label": [0, 1]}).to_csv(self.tmp / "te.csv", index=False)
    _one_line(self, DataError, r"te\.csv: columns .* differ",
              registry.load_dataset, f"csv:{self.tmp / 'tr.csv'},{self.tmp / 'te.csv'}")

  def test_unreadable_image(self):
    blob = _cifar_images(1, 1)[0][1]
    for name in ("a", "b"):
      (self.tmp / "imgs" / name).mkdir(parents=True)
      (self.tmp / "imgs" / name / "ok.jpg").write_bytes(blob)
      (self.tmp / "imgs" / name / "ok2.jpg").write_bytes(blob)
    broken = self.tmp / "imgs" / "b" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    _one_line(self, DataError, f"{broken}: unreadable image", registry.load_dataset,
              f"folder:{self.tmp / 'imgs'}", use_cache=False)

  def test_val_class_unseen_in_train(self):
    spec = self._npz(x_train=self.x, y_train=self.y, x_val=self.x[:2], y_val=[0, 9])
    _one_line(self, DataError, r"bad\.npz \(x_val/y_val\): label 9 is not a class of the "
              "training data", registry.load_dataset, spec)

  def test_test_folder_class_unseen_in_train(self):
    blob = _cifar_images(1, 1)[0][1]
    for split, name in (("train", "a"), ("train", "b"), ("test", "a"), ("test", "zebra")):
      (self.tmp / "t" / split / name).mkdir(parents=True)
      (self.tmp / "t" / split / name / "1.jpg").write_bytes(blob)
    _one_line(self, DataError, r"t/test: label 'zebra' is not a class of the training data",
              registry.load_dataset, f"folder:{self.tmp / 't'}", use_cache=False)

  def test_empty_folders(self):
    (self.tmp / "empty").mkdir()
    _one_line(self, DataError, r"empty: empty folder", registry.load_dataset,
              f"folder:{self.tmp / 'empty'}")
    (self.tmp / "empty" / "cats").mkdir()
    (self.tmp / "empty" / "cats" / "readme.txt").write_text("x")
    _one_line(self, DataError, r"cats: empty class folder", registry.load_dataset,
              f"folder:{self.tmp / 'empty'}")

  def test_missing_file(self):
    path = self.tmp / "nope.npz"
    with self.assertRaisesRegex(FileNotFoundError, f"{path}: no such file"):
      registry.load_dataset(f"npz:{path}")
    _one_line(self, DataError, "no such file", registry.load_dataset, f"csv:{path}")
    _one_line(self, paths.DataNotFoundError, "no such folder", registry.load_dataset,
              f"folder:{path}")

  def test_missing_required_array(self):
    spec = self._npz(x_train=self.x, labels=self.y)
    _one_line(self, DataError, r"bad\.npz: missing required array\(s\) \['y_train'\]",
              registry.load_dataset, spec)

  def test_unknown_source_kind(self):
    _one_line(self, user_data.UnknownSourceError,
              r"parquet:x\.pq: unknown source kind 'parquet'; known: csv, folder, npz, tfds, "
              "tfrecord",
              registry.load_dataset, "parquet:x.pq")

  def test_unknown_and_invalid_options(self):
    spec = self._npz(x_train=self.x, y_train=self.y)
    _one_line(self, ConfigError, r"npz: source does not take option\(s\) \['image_size'\]",
              registry.load_dataset, spec, image_size=32)
    _one_line(self, ConfigError, "imbalance_profile must be one of",
              registry.load_dataset, spec, imbalance_profile="linear")

  def test_long_tail_larger_than_a_class(self):
    spec = self._npz(x_train=self.x, y_train=self.y, x_val=self.x, y_val=self.y,
                     x_test=self.x, y_test=self.y)
    _one_line(self, DataError, r"bad\.npz.*class '0' has 5 training examples, the exp long "
              r"tail with n_max=50 needs 50$", registry.load_dataset, spec, imbalance_ratio=10,
              n_max=50)

  def test_non_numeric_csv_column(self):
    pd.DataFrame({"a": [1, 2, 3], "b": ["x", "2", "3"], "y": [0, 1, 1]}).to_csv(
        self.tmp / "s.csv", index=False)
    _one_line(self, DataError, r"s\.csv: column 'b' is not numeric \(line 2: 'x'\)",
              registry.load_dataset, f"csv:{self.tmp / 's.csv'}")


class VectorClipTest(tf.test.TestCase):
  """M2m's translation with per-feature bounds (a DatasetSplits.clip_range of arrays)."""

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(7)
    self.d, self.k = 5, 3
    self.wg, self.bg = rng.normal(size=(self.d, self.k)), rng.normal(size=self.k)
    self.wf, self.bf = rng.normal(size=(self.d, self.k)), rng.normal(size=self.k)
    self.lo = np.asarray([0.0, -1.0, 0.2, -0.5, 0.0], np.float32)
    self.hi = np.asarray([1.0, 0.0, 0.3, 2.0, 0.0], np.float32)  # last feature constant
    self.x0 = rng.uniform(self.lo, self.hi, size=(6, self.d)).astype(np.float32)

  def _linear(self, w, b):
    w32, b32 = tf.constant(w, tf.float32), tf.constant(b, tf.float32)
    return lambda x, training=False: tf.matmul(x, w32) + b32

  def _reference(self, x0, y_seed, y_target, lam, eta, steps):
    """float64 NumPy: x <- clip(x - eta d/||d||), d = Wg (softmax - onehot) + lam Wf[:, y_j]."""
    x = x0.astype(np.float64)
    for _ in range(steps):
      z = x @ self.wg + self.bg
      p = np.exp(z - z.max(1, keepdims=True))
      p /= p.sum(1, keepdims=True)
      p[np.arange(len(x)), y_target] -= 1.0
      d = p @ self.wg.T + lam * self.wf[:, y_seed].T
      d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
      x = np.clip(x - eta * d, self.lo, self.hi)
    return x

  def test_translate_matches_reference_within_bounds(self):
    y_seed, y_target = np.asarray([0, 1, 2, 0, 1, 2]), np.asarray([1, 2, 0, 2, 0, 1])
    got = translate(self._linear(self.wg, self.bg), self._linear(self.wf, self.bf), self.x0,
                    y_seed, y_target, lam=0.5, step_size=0.3, steps=8,
                    clip_min=self.lo, clip_max=self.hi).numpy()
    want = self._reference(self.x0, y_seed, y_target, 0.5, 0.3, 8)
    self.assertAllClose(got, want, atol=1e-5)
    self.assertTrue(np.all(got >= self.lo) and np.all(got <= self.hi))
    np.testing.assert_array_equal(got[:, 4], 0.0)
    # The bounds bind: some coordinate sits on a per-feature bound other than the scalar [0, 1].
    self.assertTrue(np.any(np.isclose(got[:, 2], 0.3)) or np.any(np.isclose(got[:, 2], 0.2)))
    unclipped = translate(self._linear(self.wg, self.bg), self._linear(self.wf, self.bf),
                          self.x0, y_seed, y_target, lam=0.5, step_size=0.3, steps=8,
                          clip_min=None, clip_max=None).numpy()
    self.assertFalse(np.all((unclipped >= self.lo - 1e-6) & (unclipped <= self.hi + 1e-6)))

  def test_generate_with_dataset_clip_range(self):
    x = np.tile(self.x0, (4, 1))
    y = np.tile(np.asarray([0, 0, 0, 0, 1, 2]), 4)
    config = generation.M2mConfig(beta=0.0, gamma=0.0, steps=5, step_size=0.5, start_noise=0.5,
                                  clip_range=(self.lo, self.hi), n_buckets=1,
                                  fold_batchnorm=False)
    x_new, _, stats = generation.generate(
        self._linear(self.wg, self.bg), self._linear(self.wf, self.bf), x, y, [100, 10, 5],
        config, tf.constant([1, 2], tf.int64), static_shapes=False)
    self.assertGreater(float(stats["accepted"]), 0)
    x_new = x_new.numpy()
    self.assertTrue(np.all(x_new >= self.lo) and np.all(x_new <= self.hi))


if __name__ == "__main__":
  absltest.main()
