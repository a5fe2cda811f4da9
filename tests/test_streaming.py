"""Tests of the streaming input: TFRecord directories (data_prep/tfrecord_dir.py), the streamed
sources (data_prep/streamed.py) and the training stream (m2m_tf/data/streaming.py).

Small synthetic directories are written to temporary folders. Every image carries its row
number in its first two pixels, so a batch says which examples it holds.
"""

import json
import os
import shutil
import tempfile
from unittest import mock

from absl.testing import parameterized
import numpy as np
import pytest
from scipy import stats
import tensorflow as tf

from benchmarks import streaming as bench
from data_prep import normalization
from data_prep import registry
from data_prep import splits
from data_prep import streamed
from data_prep import tfrecord_dir
from m2m_tf.config import ExperimentConfig
from m2m_tf.data import pipeline
from m2m_tf.data import streaming
from m2m_tf.errors import ConfigError, DataError
from m2m_tf.training import run
from m2m_tf.training.methods import METHODS
import helpers

_COUNTS = (48, 24, 12, 6, 3, 3)  # N = 96, the largest class is class 0
_SHAPE = (6, 6, 3)


def _images(n, seed=0, shape=_SHAPE):
  """uint8 images whose first two pixels hold their row (i % 256, i // 256)."""
  x = np.random.default_rng(seed).integers(0, 256, (n,) + shape, np.uint8)
  x[:, 0, 0, 0], x[:, 0, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
  return x


def _rows(xb):
  """The rows of a batch of `_images` (scaled to [0, 1], not augmented)."""
  px = np.round(np.asarray(xb)[:, 0, 0, :2] * 255).astype(np.int64)
  return px[:, 0] + 256 * px[:, 1]


def _splits(counts=_COUNTS, seed=0):
  y = np.repeat(np.arange(len(counts)), counts)
  y = y[np.random.default_rng(seed).permutation(len(y))]
  x = _images(len(y), seed)
  names = tuple(f"c{k}" for k in range(len(counts)))
  return splits.DatasetSplits("toy", x, y, x[:12], y[:12], x[12:30], y[12:30], names, "image",
                              (0.0, 1.0))


def _tmpdir(test):
  path = tempfile.mkdtemp(prefix="m2m_test_streaming_")
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


_one_line = helpers.assert_one_line


class StreamTest(tf.test.TestCase, parameterized.TestCase):
  """The training stream: epochs, balance, determinism, equality with the in-memory input."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="m2m_test_streaming_")
    cls.data = _splits()
    # Small shards, so that batches cross files.
    cls.dir = tfrecord_dir.write_splits(os.path.join(cls.tmp, "toy"), cls.data, shard_bytes=2048)
    cls.source = tfrecord_dir.read_dir(cls.dir).train_source()

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _stream(self, reader="pread", **kw):
    args = dict(num_classes=len(_COUNTS), batch_size=16, seed=7, epochs=3)
    args.update(kw)
    return streaming.train_dataset(self.source, reader=reader, **args)

  @parameterized.parameters("pread", "tf")
  def test_phase1_epoch_holds_every_example_once(self, reader):
    n, b = sum(_COUNTS), 16
    steps = pipeline.steps_per_epoch(n, b)
    batches = [(_rows(x), y.numpy()) for x, y in self._stream(reader, batch_size=b)]
    self.assertLen(batches, 3 * steps)
    for e in range(3):
      rows = np.concatenate([r for r, _ in batches[e * steps:(e + 1) * steps]])
      self.assertAllEqual(np.sort(rows), np.arange(n))  # each example exactly once
      labels = np.concatenate([y for _, y in batches[e * steps:(e + 1) * steps]])
      self.assertAllEqual(labels, self.data.y_train[rows])
    # A batch that does not divide N: every example at most once, the remainder dropped.
    rows = np.concatenate([_rows(x) for x, _ in self._stream(reader, batch_size=40, epochs=1)])
    self.assertLen(rows, 80)
    self.assertLen(np.unique(rows), 80)

  def test_balanced_classes_are_uniform_within_a_binomial_bound(self):
    # Each draw of the balanced phase picks one of K classes with p = 1/K, independently, so
    # class k's count over M draws is Binomial(M, 1/K). We allow z = 5 standard deviations,
    # sqrt(M p (1 - p)): a correct sampler fails this with probability below
    # K * 2 * Phi(-5) = 3.4e-6 (Bonferroni over the K classes), while instance-balanced draws
    # (p_0 = 0.5 here against 1/6) miss it by more than 50 deviations.
    k, epochs, b = len(_COUNTS), 40, 16
    labels = np.concatenate([y.numpy() for _, y in self._stream(
        batch_size=b, epochs=epochs, balanced_from_epoch=0)])
    m, p = len(labels), 1.0 / k
    counts = np.bincount(labels, minlength=k)
    bound = 5.0 * np.sqrt(m * p * (1 - p))
    self.assertLess(np.max(np.abs(counts - m * p)), bound, counts)
    # Within a class, examples are uniform: a chi-square test on class 0's 48 examples at
    # a false-alarm rate of 1e-6.
    rows = np.concatenate([_rows(x) for x, _ in self._stream(
        batch_size=b, epochs=epochs, balanced_from_epoch=0)])
    head = np.flatnonzero(self.data.y_train == 0)
    per_example = np.array([(rows == r).sum() for r in head])
    expected = per_example.sum() / len(head)
    chi2 = ((per_example - expected) ** 2 / expected).sum()
    self.assertLess(chi2, stats.chi2.ppf(1 - 1e-6, len(head) - 1))

  def test_same_seed_and_epoch_give_the_same_batches(self):
    full = [(x.numpy(), y.numpy()) for x, y in self._stream(epochs=5, balanced_from_epoch=3,
                                                            augment=True)]
    again = [(x.numpy(), y.numpy()) for x, y in self._stream(epochs=5, balanced_from_epoch=3,
                                                             augment=True)]
    resumed = [(x.numpy(), y.numpy()) for x, y in self._stream(
        epochs=5, start_epoch=2, balanced_from_epoch=3, augment=True)]
    steps = pipeline.steps_per_epoch(sum(_COUNTS), 16)
    for (xa, ya), (xb, yb) in zip(full, again):
      self.assertAllEqual(xa, xb)
      self.assertAllEqual(ya, yb)
    self.assertLen(resumed, 3 * steps)
    for (xa, ya), (xb, yb) in zip(full[2 * steps:], resumed):  # epochs 2, 3 (balanced) and 4
      self.assertAllEqual(xa, xb)
      self.assertAllEqual(ya, yb)
    other = next(iter(self._stream(seed=8)))[1].numpy()
    self.assertNotAllEqual(other, full[0][1])

  @parameterized.parameters("pread", "tf")
  def test_batches_equal_the_in_memory_input(self, reader):
    kw = dict(num_classes=len(_COUNTS), batch_size=16, seed=3, epochs=4, balanced_from_epoch=2,
              augment=True)
    memory = pipeline.train_dataset(self.data.x_train, self.data.y_train, **kw)
    stream = streaming.train_dataset(self.source, reader=reader, **kw)
    n = 0
    for (xa, ya), (xb, yb) in zip(memory, stream):
      self.assertAllEqual(xa, xb)  # bit for bit, augmentation included
      self.assertAllEqual(ya, yb)
      n += 1
    self.assertEqual(n, 4 * pipeline.steps_per_epoch(sum(_COUNTS), 16))

  def test_input_pipelines_split_the_same_stream(self):
    kw = dict(num_classes=len(_COUNTS), batch_size=16, seed=3, epochs=1)
    whole = [_rows(x) for x, _ in streaming.train_dataset(self.source, **kw)]
    shards = [[_rows(x) for x, _ in streaming.train_dataset(
        self.source, input_context=tf.distribute.InputContext(2, i, 2), **kw)] for i in range(2)]
    for step, rows in enumerate(whole):
      self.assertAllEqual(np.concatenate([shards[0][step], shards[1][step]]), rows)
    # Augmented too: each shard gets its rows' draws of the global batch (both readers).
    for reader in ("pread", "tf"):
      args = dict(kw, augment=True, reader=reader)
      whole = [x.numpy() for x, _ in streaming.train_dataset(self.source, **args)]
      shards = [[x.numpy() for x, _ in streaming.train_dataset(
          self.source, input_context=tf.distribute.InputContext(2, i, 2), **args)]
                for i in range(2)]
      for step, x in enumerate(whole):
        self.assertAllEqual(np.concatenate([shards[0][step], shards[1][step]]), x, msg=reader)

  def test_the_directory_round_trips(self):
    tdir = tfrecord_dir.read_dir(self.dir)
    self.assertGreater(len(tdir.indexes["train"].files), 2)
    for split in ("train", "val", "test"):
      x, y = tfrecord_dir.load_split(tdir, split)
      self.assertAllEqual(x, getattr(self.data, f"x_{split}"))
      self.assertAllEqual(y, getattr(self.data, f"y_{split}"))
    self.assertEqual(tfrecord_dir.verify(self.dir), 96 + 12 + 18)
    self.assertEqual(self.source.normalization, normalization.input_normalization(self.data))

  def test_png_directory_reads_the_same_pixels(self):
    png = tfrecord_dir.write_splits(os.path.join(self.tmp, "png"), self.data, encoding="png")
    source = tfrecord_dir.read_dir(png).train_source()
    kw = dict(num_classes=len(_COUNTS), batch_size=16, seed=1, epochs=1)
    for (xa, _), (xb, _) in zip(streaming.train_dataset(self.source, **kw),
                                streaming.train_dataset(source, **kw)):
      self.assertAllEqual(xa, xb)


class SourceTest(tf.test.TestCase):
  """Streamed sources give the splits the in-memory loader gives, with train on disk."""

  def setUp(self):
    super().setUp()
    self.tmp = _tmpdir(self)
    self.cache = os.path.join(self.tmp, "cache")

  def _same(self, streamed_data, memory):
    for field in ("y_train", "x_val", "y_val", "x_test", "y_test"):
      self.assertAllEqual(getattr(streamed_data, field), getattr(memory, field), field)
    for field in ("name", "class_names", "label", "clip_range", "input_kind", "input_shape"):
      self.assertEqual(getattr(streamed_data, field), getattr(memory, field), field)
    self.assertLen(streamed_data.x_train, len(memory.x_train))
    x, _ = tfrecord_dir.load_split(tfrecord_dir.read_dir(streamed_data.train_source.directory),
                                   "train")
    self.assertAllEqual(x, memory.x_train)

  def test_tfrecord_dir_as_it_is(self):
    data = _splits()
    path = tfrecord_dir.write_splits(os.path.join(self.tmp, "d"), data)
    spec = f"tfrecord:{path}"
    got = streamed.load_streamed(spec, cache_dir=self.cache)
    self._same(got, registry.load_dataset(spec))
    self.assertEqual(got.train_source.directory, str(path))  # read in place, nothing copied
    self.assertFalse(os.path.exists(self.cache))
    with self.assertRaisesRegex(DataError, "streamed from disk"):
      np.asarray(got.x_train)

  def test_tfrecord_dir_with_hold_outs_and_a_long_tail(self):
    data = _splits(counts=(30, 30, 30, 30))
    path = tfrecord_dir.write_splits(os.path.join(self.tmp, "bal"), data, splits=("train",))
    spec, opts = f"tfrecord:{path}", dict(imbalance_ratio=5, val_fraction=0.2)
    got = streamed.load_streamed(spec, cache_dir=self.cache, **opts)
    self._same(got, registry.load_dataset(spec, **opts))
    self.assertTrue(got.train_source.directory.startswith(self.cache))
    again = streamed.load_streamed(spec, cache_dir=self.cache, **opts)  # the cached copy
    self.assertEqual(again.train_source.directory, got.train_source.directory)
    self.assertLen(os.listdir(os.path.join(self.cache, "tfrecord")), 1)

  def test_npz_images_are_built_then_written_once(self):
    data = _splits()
    path = os.path.join(self.tmp, "img.npz")
    np.savez(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
             y_test=data.y_test)
    # npz takes no cache_dir option: the copy goes to $M2M_CACHE_DIR.
    with mock.patch.dict(os.environ, {"M2M_CACHE_DIR": self.cache}):
      got = streamed.load_streamed(f"npz:{path}")
    self._same(got, registry.load_dataset(f"npz:{path}"))
    self.assertTrue(got.train_source.directory.startswith(self.cache))

  def test_command_line_writes_and_verifies_a_directory(self):
    data = _splits()
    path = os.path.join(self.tmp, "img.npz")
    np.savez(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
             y_test=data.y_test)
    out = os.path.join(self.tmp, "exported")
    self.assertEqual(streamed.main(["--dataset", f"npz:{path}", "--out", out,
                                        "--option", "val_fraction=0.25"]), 0)
    self.assertEqual(streamed.main(["--verify", out]), 0)
    memory = registry.load_dataset(f"npz:{path}", val_fraction=0.25)
    self.assertAllEqual(tfrecord_dir.load_split(tfrecord_dir.read_dir(out), "val")[0],
                        memory.x_val)

  def test_features_are_refused(self):
    _one_line(self, DataError, "streaming reads uint8 images", streamed.load_streamed,
              "synthetic_lt")


class TfdsSourceTest(tf.test.TestCase):
  """`tfds:NAME` streamed from a tiny TFDS dataset prepared into a temporary folder."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tfds_dir = tempfile.mkdtemp(prefix="m2m_stream_tfds_")
    helpers.prepare_tiny_tfds(cls.tfds_dir, "StreamTinyImages", {"train": (0, 30)},
                              lambda start, i, rng: rng.integers(0, 256, (8, 8, 3), np.uint8))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tfds_dir, ignore_errors=True)
    super().tearDownClass()

  def test_tfds_streamed_equals_in_memory(self):
    cache = _tmpdir(self)
    opts = dict(tfds_data_dir=self.tfds_dir, imbalance_ratio=9, image_size=4)
    spec = "tfds:stream_tiny_images"
    got = streamed.load_streamed(spec, cache_dir=cache, **opts)
    memory = registry.load_dataset(spec, use_cache=False, **opts)
    SourceTest._same(self, got, memory)
    self.assertEqual(got.input_shape, (4, 4, 3))


class ErrorTest(tf.test.TestCase):
  """A malformed directory is one line naming the file and the problem."""

  def setUp(self):
    super().setUp()
    self.path = tfrecord_dir.write_splits(
        os.path.join(_tmpdir(self), "d"), _splits(), shard_bytes=2048)

  def test_not_a_directory(self):
    _one_line(self, tfrecord_dir.MissingDirError, "no such TFRecord directory",
              tfrecord_dir.read_dir, str(self.path) + "-missing")
    os.remove(self.path / tfrecord_dir.META_FILE)
    _one_line(self, DataError, "no m2m_tfrecord.json", tfrecord_dir.read_dir, self.path)

  def test_bad_metadata(self):
    (self.path / tfrecord_dir.META_FILE).write_text("{not json")
    _one_line(self, DataError, "m2m_tfrecord.json: cannot be read as JSON",
              tfrecord_dir.read_dir, self.path)
    (self.path / tfrecord_dir.META_FILE).write_text(json.dumps({"format": "other"}))
    _one_line(self, DataError, "not a m2m_tf.tfrecord_dir version 1 file",
              tfrecord_dir.read_dir, self.path)

  def test_truncated_or_missing_shard(self):
    shard = self.path / "train-00001.tfrecord"
    with open(shard, "r+b") as fh:
      fh.truncate(100)
    _one_line(self, DataError, r"train-00001\.tfrecord: 100 bytes, m2m_tfrecord\.json says",
              tfrecord_dir.read_dir, self.path)
    os.remove(shard)
    _one_line(self, tfrecord_dir.MissingDirError, r"train-00001\.tfrecord: missing",
              tfrecord_dir.read_dir, self.path)

  def test_corrupt_record(self):
    # Same size, damaged bytes inside the first record: it no longer parses.
    shard = self.path / "train-00000.tfrecord"
    raw = bytearray(shard.read_bytes())
    raw[20:40] = b"\xff" * 20
    shard.write_bytes(bytes(raw))
    _one_line(self, DataError, r"train-00000\.tfrecord: the record of row 0 cannot be parsed",
              tfrecord_dir.read_dir, self.path)

  def test_damaged_record_inside_a_shard_fails_verify(self):
    shard = self.path / "train-00001.tfrecord"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    tfrecord_dir.read_dir(self.path)  # the cheap check reads only the first and last records
    _one_line(self, DataError, "train cannot be read", tfrecord_dir.verify, self.path)

  def test_run_reports_one_line(self):
    (self.path / tfrecord_dir.META_FILE).write_text("[]")
    cfg = ExperimentConfig.from_leaves(dataset=f"tfrecord:{self.path}", streaming=True)
    _one_line(self, DataError, f"tfrecord:{self.path}: .*not a m2m_tf.tfrecord_dir",
              run.load_data, cfg)

  def test_config_refuses_what_needs_the_split_in_memory(self):
    base = dict(dataset="cifar10_jpeg_lt", streaming=True, output_dir="x")
    with self.assertRaisesRegex(ConfigError, "SMOTE and seed_pool_size need it in memory"):
      ExperimentConfig.from_leaves(method="smote", **base).resolved().check_resolved(METHODS)
    with self.assertRaisesRegex(ConfigError, "SMOTE and seed_pool_size need it in memory"):
      ExperimentConfig.from_leaves(seed_pool_size=5, **base).resolved().check_resolved(
          METHODS)


@pytest.mark.slow
class RunTest(tf.test.TestCase):
  """A run through the streaming input gives the in-memory run's results, digit for digit."""

  def test_streaming_run_equals_in_memory_run(self):
    tmp = _tmpdir(self)
    data = _splits(counts=(40, 20, 10, 6))
    data = splits.DatasetSplits(  # learnable: class k's images are brighter by k
        data.name, np.clip(data.x_train // 2 + 40 * data.y_train[:, None, None, None], 0,
                           255).astype(np.uint8), data.y_train, data.x_val, data.y_val,
        data.x_test, data.y_test, data.class_names, "image", (0.0, 1.0))
    path = tfrecord_dir.write_splits(os.path.join(tmp, "d"), data)
    results = {}
    for method in ("m2m",):  # M2m covers DRS too: phase 2 draws the class-balanced stream
      for mode in (False, True):
        out = os.path.join(tmp, f"{method}_{mode}")
        cfg = ExperimentConfig.from_leaves(
            dataset=f"tfrecord:{path}", streaming=mode, method=method, self_translation=True,
            epochs=3, batch_size=16, output_dir=out, verbose=0, jit_compile="false")
        run.run_experiment(cfg)
        results[method, mode] = helpers.load_results(out)
        self.assertEqual(run.load_data(cfg).train_source is not None, mode)
      self.assertEqual(results[method, True], results[method, False])


class BenchHelpersTest(tf.test.TestCase):
  """The pure parts of benchmarks/streaming.py."""

  def test_long_tail_counts_and_subsets(self):
    counts = bench.long_tail_counts(1000, 256.0, 115846)
    self.assertLen(counts, 1000)
    self.assertLess(abs(counts.sum() - 115846), 1000)
    self.assertTrue(np.all(np.diff(counts) <= 0))
    labels = np.repeat(np.arange(3), [10, 4, 1])
    rows = bench.stratified_rows(labels, 0.5)
    self.assertAllEqual(np.bincount(labels[rows]), [5, 2, 1])  # every class kept
    self.assertAllEqual(rows, np.sort(rows))

  @pytest.mark.slow
  def test_quick_benchmark_runs_and_cleans_up(self):
    work = _tmpdir(self)
    report = bench.main(["--quick", "--skip", "cifar", "steps", "--workdir", work])
    syn = report["synthetic"]
    self.assertEqual(syn["written"]["examples"], sum(bench.long_tail_counts(20, 256.0, 600)))
    self.assertEqual(set(syn["read_only"]), {"pread", "tf"})
    self.assertLen(syn["memory"], 2)
    self.assertEqual(os.listdir(work), [])  # the generated files are deleted
