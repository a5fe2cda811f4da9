"""Tests of data_prep.reuters on the real R52 files and on small fake files."""

import collections
import os
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
import numpy as np
from sklearn.feature_extraction.text import CountVectorizer

from data_prep import download
from data_prep import paths
from data_prep import reuters
from data_prep import stopwords
from helpers import drop_from_cache_entry

# docs/data.md#reuters-r52: training counts of the 36 kept classes.
PROVENANCE_COUNTS = [
    ("earn", 2840), ("acq", 1596), ("crude", 253), ("trade", 251),
    ("money-fx", 206), ("interest", 190), ("money-supply", 123),
    ("ship", 108), ("sugar", 97), ("coffee", 90), ("gold", 70), ("gnp", 58),
    ("cpi", 54), ("cocoa", 46), ("grain", 41), ("reserves", 37), ("jobs", 37),
    ("ipi", 33), ("copper", 31), ("alum", 31), ("rubber", 31),
    ("iron-steel", 26), ("nat-gas", 24), ("bop", 22), ("veg-oil", 19),
    ("tin", 17), ("cotton", 15), ("wpi", 14), ("orange", 13),
    ("pet-chem", 13), ("livestock", 13), ("gas", 10),
    ("strategic-metal", 9), ("zinc", 8), ("carcass", 6), ("fuel", 4)]


class TempDirMixin:
  """Temporary folders without absl flags (works under plain pytest)."""

  def tmpdir(self):
    path = tempfile.mkdtemp(prefix="m2m_data_prep_test_")
    self.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _read_raw(path):
  """Independent reader: (labels, texts)."""
  labels, texts = [], []
  with open(path, encoding="utf-8") as f:
    for line in f:
      label, text = line.rstrip("\n").split("\t", 1)
      labels.append(label)
      texts.append(text)
  return labels, texts


class RealReutersTest(TempDirMixin, absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data = reuters.build_reuters(use_cache=False)
    cls.root = paths.resolve_data_dir(None)

  def test_classes_and_counts(self):
    d = self.data
    self.assertEqual(d.num_classes, 36)
    self.assertEqual(d.name, "reuters")
    y_all = np.concatenate([d.y_train, d.y_val])
    self.assertLen(y_all, 6436)
    counts = np.bincount(y_all, minlength=36)
    self.assertEqual(list(zip(d.class_names, counts.tolist())),
                     PROVENANCE_COUNTS)
    self.assertEqual(counts.max() / counts.min(), 710.0)
    self.assertLen(d.y_test, 2530)
    self.assertEqual(set(d.y_test.tolist()), set(range(36)))
    self.assertTrue(all(n >= 5 for n in np.bincount(d.y_test)))

  def test_features_binary_1000d(self):
    d = self.data
    self.assertEqual(d.input_shape, (1000,))
    self.assertEqual((d.input_kind, d.clip_range, d.label),
                     ("bow", (0.0, 1.0), ""))
    for x in (d.x_train, d.x_val, d.x_test):
      self.assertEqual(x.dtype, np.float32)
      self.assertTrue(np.all((x == 0) | (x == 1)))
    for y in (d.y_train, d.y_val, d.y_test):
      self.assertEqual(y.dtype, np.int64)

  def test_stratified_validation(self):
    d = self.data
    self.assertLen(d.y_val, 645)
    val = np.bincount(d.y_val, minlength=36)
    for k, (_, n_k) in enumerate(PROVENANCE_COUNTS):
      self.assertEqual(val[k], max(1, round(0.1 * n_k)), k)
    self.assertEqual((d.class_counts + val).tolist(),
                     [n for _, n in PROVENANCE_COUNTS])
    # 645 / 6436 = 0.1002 (the count itself is pinned above): per-class rounding
    # of 10% keeps the total near 10%.
    self.assertAlmostEqual(len(d.y_val) / 6436, 0.1, delta=0.002)

  def test_features_match_independent_sklearn_reference(self):
    train_labels, train_texts = _read_raw(self.root / "r52/r52-train.txt")
    test_labels, test_texts = _read_raw(self.root / "r52/r52-test.txt")
    test_counts = collections.Counter(test_labels)
    kept = {c for c in test_counts if test_counts[c] >= 5}
    tr = [t for c, t in zip(train_labels, train_texts) if c in kept]
    te = [t for c, t in zip(test_labels, test_texts) if c in kept]
    stop = stopwords.ENGLISH_STOP_WORD_SET
    # Token counts (scikit-learn) and first position in the token stream,
    # for Counter.most_common's tie order (count desc, then first seen).
    vec = CountVectorizer(tokenizer=str.split, token_pattern=None,
                          lowercase=False, stop_words=sorted(stop))
    totals_row = np.asarray(vec.fit_transform(tr).sum(axis=0)).ravel()
    totals = dict(zip(vec.get_feature_names_out(), totals_row.tolist()))
    first = {}
    for t in tr:
      for w in t.split():
        if w not in stop and w not in first:
          first[w] = len(first)
    self.assertEqual(set(first), set(totals))
    ranked = sorted(first, key=lambda w: (-totals[w], first[w]))
    self.assertEqual(totals[ranked[998]], totals[ranked[999]])  # a tie!
    top = ranked[:999]
    ref_vec = CountVectorizer(tokenizer=str.split, token_pattern=None,
                              lowercase=False, binary=True, vocabulary=top)
    top_set = set(top)

    def reference(texts):
      own = ref_vec.transform(texts).toarray().astype(np.float32)
      unk = np.array([any(w not in top_set and w not in stop
                          for w in t.split()) for t in texts], np.float32)
      return np.concatenate([own, unk[:, None]], axis=1)

    # Put the builder's train/val rows back in file order.
    d = self.data
    index = {c: k for k, c in enumerate(d.class_names)}
    y_all = np.array([index[c] for c in train_labels if c in kept], np.int64)
    train_idx, val_idx = reuters.stratified_holdout(y_all, 36, 0.1, 0)
    self.assertEmpty(np.intersect1d(train_idx, val_idx))
    self.assertLen(np.union1d(train_idx, val_idx), 6436)
    np.testing.assert_array_equal(y_all[train_idx], d.y_train)
    np.testing.assert_array_equal(y_all[val_idx], d.y_val)
    x_ref = reference(tr)
    np.testing.assert_array_equal(d.x_train, x_ref[train_idx])
    np.testing.assert_array_equal(d.x_val, x_ref[val_idx])
    np.testing.assert_array_equal(d.x_test, reference(te))

  def test_deterministic_and_cached(self):
    cache_dir = self.tmpdir()
    first = reuters.build_reuters(cache_dir=cache_dir)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
      np.testing.assert_array_equal(getattr(first, name),
                                    getattr(self.data, name))
    self.assertEqual(first.class_names, self.data.class_names)
    self.assertLen(os.listdir(cache_dir), 1)
    with mock.patch.object(reuters, "_build_arrays",
                           side_effect=AssertionError("cache miss")):
      second = reuters.build_reuters(cache_dir=cache_dir)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
      a, b = getattr(first, name), getattr(second, name)
      self.assertEqual(a.dtype, b.dtype)
      self.assertEqual(a.tobytes(), b.tobytes())
    self.assertEqual(first.class_names, second.class_names)

  def test_split_seed_changes_only_the_holdout(self):
    other = reuters.build_reuters(use_cache=False, split_seed=1)
    np.testing.assert_array_equal(other.y_val.size, self.data.y_val.size)
    np.testing.assert_array_equal(np.bincount(other.y_val),
                                  np.bincount(self.data.y_val))
    self.assertFalse(np.array_equal(other.x_val, self.data.x_val))
    np.testing.assert_array_equal(other.x_test, self.data.x_test)

  def test_checksum_mismatch(self):
    root = self.tmpdir()
    os.makedirs(os.path.join(root, "r52"))
    for name in ("r52-train.txt", "r52-test.txt"):
      shutil.copy(self.root / "r52" / name, os.path.join(root, "r52", name))
    with open(os.path.join(root, "r52", "r52-train.txt"), "a") as f:
      f.write("earn\textra line\n")
    with self.assertRaises(download.ChecksumError) as ctx:
      reuters.build_reuters(root, use_cache=False)
    self.assertIn("r52-train.txt", str(ctx.exception))
    self.assertIn("mismatch", str(ctx.exception))


class FakeReutersTest(TempDirMixin, absltest.TestCase):

  def _root(self, train, test):
    root = self.tmpdir()
    os.makedirs(os.path.join(root, "r52"))
    for name, text in (("r52-train.txt", train), ("r52-test.txt", test)):
      with open(os.path.join(root, "r52", name), "w") as f:
        f.write(text)
    return root

  def _build(self, root, **kw):
    kw.setdefault("verify_checksums", False)
    kw.setdefault("use_cache", False)
    return reuters.build_reuters(root, **kw)

  def test_hand_computed_vocabulary(self):
    # Counts without stop words: apple 3, banana 2, cherry 1, date 1.
    # vocab_size 4: apple 0, banana 1, cherry 2, date 3 = UNK, zebra UNK.
    root = self._root("a\tapple apple banana the\n"
                      "b\tcherry  banana apple date\n",
                      "a\tapple zebra\nb\tcherry\n")
    d = self._build(root, vocab_size=4, val_fraction=0.0, min_test_docs=1)
    self.assertEqual(d.class_names, ("a", "b"))
    np.testing.assert_array_equal(d.x_train, [[1, 1, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(d.x_test, [[1, 0, 0, 1], [0, 0, 1, 0]])
    self.assertEqual(d.x_val.shape, (0, 4))
    # "date" (rank 3 = vocab_size-1) shares UNK: only ranks 0..2 own an index.
    self.assertEqual(d.text_features, {
        "kind": "bag_of_words", "vocabulary": ("apple", "banana", "cherry"),
        "stop_words": stopwords.ENGLISH_STOP_WORDS, "vocab_size": 4})

  def test_vocabulary_rule_with_ties(self):
    # Counts: w0 5, w1 4, w2 3, w3 3, w4 3, w5 1. vocab_size 4 -> threshold is
    # the count of rank 2 (3): ranks 0..2 keep their index, rank 3 is 3 = UNK,
    # ranks >= 4 are UNK too.
    docs = [["w0"] * 5 + ["w1"] * 4 + ["w2"] * 3 + ["w3"] * 3 + ["w4"] * 3 +
            ["w5"]]
    vocab = reuters.build_vocabulary(docs, 4)
    self.assertEqual(vocab, {"w0": 0, "w1": 1, "w2": 2, "w3": 3})
    x = reuters.binary_bag_of_words([["w4"], ["w5"], ["new"], ["w1", "w3"]],
                                    vocab, 4)
    np.testing.assert_array_equal(
        x, [[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1], [0, 1, 0, 1]])

  def test_drops_classes_with_few_test_docs(self):
    train = "".join(f"big\tdoc number{i}\n" for i in range(10))
    train += "small\tdoc tiny\nsmall\tdoc tiny two\n"
    test = "big\tdoc\n" * 5 + "small\tdoc\n" * 4
    d = self._build(self._root(train, test))
    self.assertEqual(d.class_names, ("big",))
    self.assertLen(d.y_train, 9)
    self.assertLen(d.y_val, 1)
    self.assertLen(d.y_test, 5)

  def test_malformed_lines(self):
    good = "a\tx y\n" * 3
    for bad, what in (("a x y\n", "no tab"), ("\tx y\n", "empty label"),
                      ("a\t   \n", "empty text"), ("\n", "no tab")):
      root = self._root(good + bad, "a\tx\n")
      with self.assertRaises(ValueError) as ctx:
        self._build(root, min_test_docs=1)
      msg = str(ctx.exception)
      self.assertIn("r52-train.txt:4", msg)
      self.assertIn(what, msg)

  def test_unknown_test_label(self):
    root = self._root("a\tx y\nb\tz\n", "a\tx\nc\ty\n")
    with self.assertRaises(ValueError) as ctx:
      self._build(root, min_test_docs=1)
    self.assertIn("r52-test.txt:2", str(ctx.exception))
    self.assertIn("unknown label 'c'", str(ctx.exception))

  def test_empty_class(self):
    root = self._root("a\tx\na\ty\nb\tz\nb\tw\nb\tv\nb\tu\nb\tt\n",
                      "a\tx\nb\tz\n")
    with self.assertRaisesRegex(ValueError, "Class 'a' is empty"):
      self._build(root, min_test_docs=1, val_fraction=0.8)
    with self.assertRaisesRegex(ValueError, "every class would be empty"):
      self._build(root, min_test_docs=2)

  def test_cache_without_vocabulary_is_rebuilt(self):
    root = self._root("a\tapple apple banana\nb\tcherry banana\n", "a\tapple\nb\tzebra\n")
    cache_dir = self.tmpdir()
    kw = dict(vocab_size=3, val_fraction=0.0, min_test_docs=1, use_cache=True,
              cache_dir=cache_dir)
    first = self._build(root, **kw)
    self.assertEqual(first.text_features["vocabulary"], ("apple", "banana"))
    # Rewrite the entry as the previous version wrote it: valid, but without the vocabulary.
    drop_from_cache_entry(cache_dir, ["vocabulary"])
    build = mock.Mock(side_effect=reuters._build_arrays)
    with mock.patch.object(reuters, "_build_arrays", build):
      with self.assertLogs(level="WARNING") as logs:
        second = self._build(root, **kw)
      self.assertEqual(build.call_count, 1)
      self.assertIn("vocabulary", "\n".join(logs.output))
      self.assertEqual(second.text_features, first.text_features)
      third = self._build(root, **kw)  # the rebuilt entry holds it: no second rebuild
      self.assertEqual(build.call_count, 1)
    self.assertEqual(third.text_features, first.text_features)
    np.testing.assert_array_equal(third.x_test, [[1, 0, 0], [0, 0, 1]])

  def test_missing_data_dir_and_file(self):
    with self.assertRaisesRegex(paths.DataNotFoundError, "--data_dir"):
      reuters.build_reuters(os.path.join(self.tmpdir(), "none"))
    with self.assertRaisesRegex(paths.DataNotFoundError, "r52-train.txt"):
      reuters.build_reuters(self.tmpdir())


if __name__ == "__main__":
  absltest.main()
