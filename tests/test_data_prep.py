"""Tests of data_prep: paths, download/verify, cache, synthetic, registry."""

import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

import data_prep
from data_prep import cache
from data_prep import download
from data_prep import paths
from data_prep import recipes
from data_prep import registry
from data_prep import splits
from data_prep import stopwords
from data_prep import synthetic


class TempDirMixin:
  """Temporary folders without absl flags (works under plain pytest)."""

  def tmpdir(self):
    path = tempfile.mkdtemp(prefix="m2m_data_prep_test_")
    self.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path

  def tmpfile(self, content, name="file.bin"):
    path = os.path.join(self.tmpdir(), name)
    with open(path, "wb") as f:
      f.write(content)
    return path


class PathsTest(TempDirMixin, absltest.TestCase):

  def test_argument_wins_over_env(self):
    a, b = self.tmpdir(), self.tmpdir()
    with mock.patch.dict(os.environ, {"M2M_DATA_DIR": b}):
      self.assertEqual(paths.resolve_data_dir(a), pathlib.Path(a).resolve())
      self.assertEqual(paths.resolve_data_dir(None),
                       pathlib.Path(b).resolve())

  def test_default_finds_shared_data(self):
    with mock.patch.dict(os.environ, {"M2M_DATA_DIR": ""}):
      root = paths.resolve_data_dir(None)
    self.assertTrue((root / "PROVENANCE.md").is_file())
    self.assertEqual(root.name, "data")

  def _assert_how_to(self, message):
    self.assertIn("--data_dir", message)
    self.assertIn("$M2M_DATA_DIR", message)
    self.assertIn("python -m data_prep.download --dataset reuters "
                  "--data_dir DIR", message)

  def test_missing_argument_dir_raises(self):
    missing = os.path.join(self.tmpdir(), "nope")
    with self.assertRaises(paths.DataNotFoundError) as ctx:
      paths.resolve_data_dir(missing)
    self.assertIsInstance(ctx.exception, FileNotFoundError)
    self.assertIn(missing, str(ctx.exception))
    self._assert_how_to(str(ctx.exception))

  def test_missing_env_dir_raises(self):
    with mock.patch.dict(os.environ, {"M2M_DATA_DIR": "/no/such/dir"}):
      with self.assertRaisesRegex(paths.DataNotFoundError, "/no/such/dir"):
        paths.resolve_data_dir(None)

  def test_nothing_found_raises_with_instructions(self):
    empty = self.tmpdir()
    sub = os.path.join(empty, "a", "b")
    os.makedirs(sub)
    cwd = os.getcwd()
    try:
      os.chdir(sub)
      with mock.patch.dict(os.environ, {"M2M_DATA_DIR": ""}), \
          mock.patch.object(paths, "_REPO_ROOT", pathlib.Path(sub)):
        with self.assertRaises(paths.DataNotFoundError) as ctx:
          paths.resolve_data_dir(None)
    finally:
      os.chdir(cwd)
    self._assert_how_to(str(ctx.exception))

  def test_default_falls_back_to_shared_data_inside_the_repository(self):
    repo = os.path.join(self.tmpdir(), "a", "repo")
    inside = os.path.join(repo, "shared", "data")
    os.makedirs(inside)
    cwd = os.getcwd()
    try:
      os.chdir(repo)  # ../shared/data of neither the repository nor the cwd exists
      with mock.patch.dict(os.environ, {"M2M_DATA_DIR": ""}), \
          mock.patch.object(paths, "_REPO_ROOT", pathlib.Path(repo)):
        self.assertEqual(paths.resolve_data_dir(None), pathlib.Path(inside).resolve())
    finally:
      os.chdir(cwd)

  def test_require_file_names_expected_path(self):
    root = self.tmpdir()
    with self.assertRaises(paths.DataNotFoundError) as ctx:
      paths.require_file(root, "r52/r52-train.txt")
    self.assertIn(os.path.join(root, "r52", "r52-train.txt"),
                  str(ctx.exception))


class DownloadTest(TempDirMixin, absltest.TestCase):

  def _source(self, content=b"hello raw data\n"):
    path = self.tmpfile(content, "src.txt")
    return pathlib.Path(path).as_uri(), hashlib.sha256(content).hexdigest()

  def test_file_url_is_written_atomically_and_verified(self):
    url, digest = self._source()
    out_dir = pathlib.Path(self.tmpdir())
    dest = out_dir / "r52" / "r52-train.txt"
    self.assertEqual(download.download_file(url, dest, digest.upper()), dest)
    self.assertEqual(dest.read_bytes(), b"hello raw data\n")
    self.assertEqual(os.listdir(dest.parent), ["r52-train.txt"])  # no tmp
    # Already present and valid: kept.
    download.download_file(url, dest, digest)
    self.assertEqual(dest.read_bytes(), b"hello raw data\n")

  def test_mismatch_is_refused_and_leaves_nothing(self):
    url, digest = self._source()
    out_dir = pathlib.Path(self.tmpdir())
    dest = out_dir / "x.txt"
    with self.assertRaisesRegex(download.ChecksumError, "Checksum mismatch"):
      download.download_file(url, dest, "0" * 64)
    self.assertEqual(os.listdir(out_dir), [])
    # A pre-existing file is not replaced by a bad download.
    dest.write_bytes(b"old")
    with self.assertRaises(download.ChecksumError):
      download.download_file(url, dest, "0" * 64)
    self.assertEqual(dest.read_bytes(), b"old")
    self.assertEqual(os.listdir(out_dir), ["x.txt"])

  def test_verify_sha256(self):
    content = b"abc"
    path = self.tmpfile(content)
    expected = hashlib.sha256(content).hexdigest()
    self.assertEqual(download.verify_sha256(path, expected), expected)
    with self.assertRaises(download.ChecksumError) as ctx:
      download.verify_sha256(path, "f" * 64)
    self.assertIsInstance(ctx.exception, ValueError)
    self.assertIn(path, str(ctx.exception))
    self.assertIn(expected, str(ctx.exception))

  def test_table_matches_shared_files_and_provenance(self):
    root = paths.resolve_data_dir(None)
    provenance = (root / "PROVENANCE.md").read_text()
    for rel, raw in download.RAW_FILES.items():
      self.assertIn(raw.sha256, provenance, rel)
      if raw.repo:
        self.assertIn(raw.source_path, provenance, rel)
        self.assertIn(raw.commit, provenance, rel)
      self.assertEqual(download.sha256_file(root / rel), raw.sha256, rel)
    self.assertEqual(
        download.RAW_FILES["r52/r52-train.txt"].url,
        "https://raw.githubusercontent.com/hendrycks/error-detection/"
        "276d605bfa9a9bd7701bd88937c537c3fcab94cf/"
        "NLP/Categorization/data/r52-train.txt")

  def test_cli_rejects_unknown_dataset(self):
    with self.assertRaises(SystemExit):
      download.main(["--dataset", "nope", "--data_dir", "/tmp"])
    with self.assertRaisesRegex(ValueError, "Unknown dataset"):
      download.download_dataset("nope", "/tmp")


class CacheTest(TempDirMixin, absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.tmpdir()
    self.calls = 0

  def _build(self):
    self.calls += 1
    return {"x": np.arange(6, dtype=np.float32).reshape(2, 3),
            "names": np.array(["a", "bb"], dtype=np.str_),
            "y_train": np.arange(8, dtype=np.int64),
            "y_test": np.array([1, 0], dtype=np.int64)}

  def _rewrite_entry(self, edit):
    """Rewrites the single cache file with `edit(arrays)` applied (bookkeeping keys kept)."""
    (entry,) = os.listdir(self.dir)
    path = os.path.join(self.dir, entry)
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
    edit(arrays)
    with open(path, "wb") as f:
      np.savez(f, **arrays)

  def _assert_rebuilt(self, *log_parts):
    with self.assertLogs("data_prep.cache", level="WARNING") as logs:
      out = self._get()
    self.assertEqual(self.calls, 2)
    for part in log_parts:
      self.assertIn(part, "\n".join(logs.output))
    np.testing.assert_array_equal(out["y_train"], np.arange(8))
    np.testing.assert_array_equal(out["y_test"], [1, 0])
    self._get()  # the rewritten file passes its checks again: a hit
    self.assertEqual(self.calls, 2)

  def _get(self, **kw):
    kw.setdefault("options", {"k": 1})
    return cache.cached_arrays("toy", "v1", {"f.txt": "00"}, kw.pop("options"),
                               self._build, cache_dir=self.dir, **kw)

  def test_hit_returns_identical_arrays(self):
    first = self._get()
    second = self._get()
    self.assertEqual(self.calls, 1)
    np.testing.assert_array_equal(first["x"], second["x"])
    self.assertEqual(second["x"].dtype, np.float32)
    self.assertEqual(second["names"].tolist(), ["a", "bb"])
    self.assertEqual([p for p in os.listdir(self.dir) if ".tmp" in p], [])

  def test_key_depends_on_every_part(self):
    base = cache.cache_key("toy", "v1", {"f": "00"}, {"k": 1})
    self.assertEqual(base, cache.cache_key("toy", "v1", {"f": "00"}, {"k": 1}))
    self.assertNotEqual(base, cache.cache_key("toy2", "v1", {"f": "00"},
                                              {"k": 1}))
    self.assertNotEqual(base, cache.cache_key("toy", "v2", {"f": "00"},
                                              {"k": 1}))
    self.assertNotEqual(base, cache.cache_key("toy", "v1", {"f": "01"},
                                              {"k": 1}))
    self.assertNotEqual(base, cache.cache_key("toy", "v1", {"f": "00"},
                                              {"k": 2}))
    self._get(options={"k": 1})
    self._get(options={"k": 2})
    self.assertEqual(self.calls, 2)

  def test_corrupt_file_is_rebuilt(self):
    self._get()
    (entry,) = os.listdir(self.dir)
    with open(os.path.join(self.dir, entry), "wb") as f:
      f.write(b"PK\x03\x04 this is not a zip")
    out = self._get()
    self.assertEqual(self.calls, 2)
    np.testing.assert_array_equal(
        out["x"], np.arange(6, dtype=np.float32).reshape(2, 3))
    self._get()  # the rebuilt file is valid again: a hit
    self.assertEqual(self.calls, 2)

  def test_entry_stores_a_manifest_of_every_array(self):
    self._get()
    (entry,) = os.listdir(self.dir)  # one file: arrays and hashes are written together
    with np.load(os.path.join(self.dir, entry), allow_pickle=False) as data:
      stored = json.loads(str(data["__cache_manifest__"]))
      arrays = {k: data[k] for k in data.files if not k.startswith("__")}
    self.assertEqual(sorted(stored), ["names", "x", "y_test", "y_train"])
    self.assertEqual(stored["x"]["shape"], [2, 3])
    self.assertEqual(stored["x"]["sha256"], cache.array_digest(arrays["x"]))
    self.assertIsNone(cache.check_manifest(arrays, stored))

  def test_digest_sees_dtype_shape_and_order(self):
    a = np.arange(6, dtype=np.int64)
    self.assertEqual(cache.array_digest(a), cache.array_digest(a.copy()))
    for other in (a[::-1], a.astype(np.int32), a.reshape(2, 3), a[:5]):
      self.assertNotEqual(cache.array_digest(a), cache.array_digest(other))

  def test_shuffled_array_with_right_key_is_rebuilt(self):
    self._get()
    self._rewrite_entry(lambda a: a.update(y_train=a["y_train"][::-1].copy()))
    self._assert_rebuilt("'y_train'", "sha256")

  def test_missing_array_is_rebuilt(self):
    self._get()
    self._rewrite_entry(lambda a: a.pop("y_test"))
    self._assert_rebuilt("lacks", "y_test")

  def test_changed_shape_is_rebuilt(self):
    self._get()
    self._rewrite_entry(lambda a: a.update(y_train=a["y_train"][:4]))
    self._assert_rebuilt("'y_train'", "(4,)", "(8,)")

  def test_unlisted_array_is_rebuilt(self):
    self._get()
    self._rewrite_entry(lambda a: a.update(extra=np.zeros(2)))
    self._assert_rebuilt("extra", "without a stored hash")

  def test_entry_without_manifest_is_rebuilt(self):
    self._get()
    self._rewrite_entry(lambda a: a.pop("__cache_manifest__"))
    self._assert_rebuilt("no content hashes")

  def test_missing_required_array_is_rebuilt(self):
    self._get()
    with self.assertLogs("data_prep.cache", level="WARNING") as logs:
      self._get(required=("x", "x_val"))
    self.assertEqual(self.calls, 2)
    self.assertIn("x_val", "\n".join(logs.output))

  def test_use_cache_false_always_builds(self):
    self._get(use_cache=False)
    self._get(use_cache=False)
    self.assertEqual(self.calls, 2)
    self.assertEqual(os.listdir(self.dir), [])

  def test_cache_dir_resolution(self):
    with mock.patch.dict(os.environ, {"M2M_CACHE_DIR": "/x/y"}):
      self.assertEqual(cache.resolve_cache_dir(None), pathlib.Path("/x/y"))
      self.assertEqual(cache.resolve_cache_dir("/a"), pathlib.Path("/a"))
    with mock.patch.dict(os.environ, {"M2M_CACHE_DIR": ""}):
      self.assertEqual(cache.resolve_cache_dir(None),
                       pathlib.Path.home() / ".cache" / "m2m_tf")


class StopWordsTest(absltest.TestCase):

  def test_nltk_list(self):
    words = stopwords.ENGLISH_STOP_WORDS
    self.assertLen(words, 179)
    self.assertLen(set(words), 179)
    # The 153-word pre-2018 list plus 26 contractions with an apostrophe.
    self.assertLen([w for w in words if "'" in w], 26)
    for w in ("i", "the", "against", "mightn't", "wouldn't", "ma", "y"):
      self.assertIn(w, stopwords.ENGLISH_STOP_WORD_SET)
    self.assertEqual(words[:3], ("i", "me", "my"))
    self.assertEqual(words[-1], "wouldn't")


class SyntheticTest(parameterized.TestCase):

  @parameterized.parameters((5, 200, 20.0), (10, 100, 100.0), (3, 7, 50.0))
  def test_counts(self, k, n_max, ratio):
    d = synthetic.build_synthetic_lt(num_classes=k, n_max=n_max,
                                     imbalance_ratio=ratio, dim=8)
    expected = [max(1, int(n_max * ratio**(-i / (k - 1)))) for i in range(k)]
    self.assertEqual(d.class_counts.tolist(), expected)
    self.assertEqual(np.bincount(d.y_val).tolist(), [20] * k)
    self.assertEqual(np.bincount(d.y_test).tolist(), [50] * k)
    self.assertEqual(d.input_shape, (8,))

  def test_default_counts_and_domain(self):
    d = synthetic.build_synthetic_lt()
    self.assertEqual(d.class_counts.tolist(), [200, 94, 44, 21, 10])
    for x in (d.x_train, d.x_val, d.x_test):
      self.assertEqual(x.dtype, np.float32)
      self.assertGreaterEqual(x.min(), 0.0)
      self.assertLessEqual(x.max(), 1.0)
    self.assertEqual(d.y_train.dtype, np.int64)
    self.assertEqual((d.input_kind, d.clip_range, d.name),
                     ("bow", (0.0, 1.0), "synthetic_lt"))
    self.assertNotEmpty(d.label)

  def test_deterministic_in_seed(self):
    a = synthetic.build_synthetic_lt(seed=3)
    b = synthetic.build_synthetic_lt(seed=3)
    c = synthetic.build_synthetic_lt(seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    self.assertFalse(np.array_equal(a.x_train, c.x_train))

  def test_learnable_but_not_trivial(self):
    d = synthetic.build_synthetic_lt()
    model = LogisticRegression(max_iter=2000).fit(d.x_train, d.y_train)
    bacc = balanced_accuracy_score(d.y_test, model.predict(d.x_test))
    # Measured 0.636; BLAS-dependent rounding in the solver can only flip a
    # prediction or two of the test set, far from either bound.
    self.assertGreater(bacc, 0.4)   # chance is 0.2
    self.assertLess(bacc, 0.95)

  def test_long_tail_counts_matches_official_cifar(self):
    self.assertEqual(splits.long_tail_counts(5000, 10, 100).tolist(),
                     [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
    with self.assertRaises(ValueError):
      splits.long_tail_counts(10, 3, 0.5)


class RegistryTest(absltest.TestCase):

  def test_names(self):
    self.assertEqual(data_prep.available_datasets(),
                     ("celeba5", "cifar100_lt", "cifar10_jpeg_lt", "cifar10_lt",
                      "imagenet_lt", "reuters", "sun397", "synthetic_lt", "twitter"))

  def test_unknown_name_lists_valid_ones(self):
    with self.assertRaises(ValueError) as ctx:
      data_prep.load_dataset("cifar1000")
    for name in data_prep.available_datasets():
      self.assertIn(name, str(ctx.exception))
    self.assertIn("cifar1000", str(ctx.exception))

  def test_unknown_option(self):
    with self.assertRaisesRegex(ValueError, "does not take option.*bogus"):
      data_prep.load_dataset("synthetic_lt", bogus=1)

  def test_load_synthetic_ignores_data_dir_and_passes_options(self):
    d = data_prep.load_dataset("synthetic_lt", data_dir="/nonexistent",
                               num_classes=3, n_max=30, imbalance_ratio=10.0)
    self.assertEqual(d.class_counts.tolist(), [30, 9, 3])

  def test_a_dataset_is_one_spec(self):
    for name, spec in registry.DATASETS.items():
      self.assertIsInstance(spec.recipe, recipes.Recipe, name)
      self.assertIs(registry.get_recipe(name), spec.recipe)
    self.assertIn("vocab_size", registry.DATASETS["reuters"].options)
    self.assertNotIn("data_dir", registry.DATASETS["reuters"].options)
    with self.assertRaisesRegex(ValueError, "No recipe for dataset 'npz:x.npz'"):
      registry.get_recipe("npz:x.npz")
    self.assertEqual(registry.file_stem("npz:data/my.npz"), "npz_my")
    self.assertEqual(registry.file_stem("reuters"), "reuters")
    self.assertTrue(registry.is_dataset("reuters") and registry.is_dataset("csv:a.csv"))
    self.assertFalse(registry.is_dataset("cifar1000"))

  def test_register_a_spec(self):
    self.addCleanup(registry.DATASETS.pop, "toy", None)
    recipe = recipes.Recipe("mlp", 4, 8, 0.0, (3,), (0.1,), 2)
    registry.register_dataset("toy", registry.DatasetSpec(synthetic.build_synthetic_lt, recipe))
    self.assertIs(registry.get_recipe("toy"), recipe)
    self.assertIsNone(registry.model_normalization("toy", None))
    self.assertEqual(data_prep.load_dataset("toy", num_classes=2).num_classes, 2)

  def test_one_line_registration(self):
    self.addCleanup(registry.DATASETS.pop, "toy", None)
    registry.register_dataset(
        "toy", lambda data_dir=None, **kw: synthetic.build_synthetic_lt(**kw))
    self.assertIn("toy", data_prep.available_datasets())
    self.assertEqual(data_prep.load_dataset("toy", num_classes=2).num_classes,
                     2)
    with self.assertRaisesRegex(ValueError, "already registered"):
      registry.register_dataset("toy", synthetic.build_synthetic_lt)

  def test_load_reuters_via_registry(self):
    d = data_prep.load_dataset("reuters", use_cache=False)
    self.assertEqual(d.num_classes, 36)


if __name__ == "__main__":
  absltest.main()
