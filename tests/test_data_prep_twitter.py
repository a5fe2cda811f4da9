"""Tests of data_prep.twitter on the real Twitter POS files and fake files."""

import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from data_prep import paths
from data_prep import twitter
from helpers import drop_from_cache_entry

# docs/data.md#twitter-pos: training tag counts without M (3) and Y (2).
PROVENANCE_COUNTS = [
    ("V", 2219), ("N", 2003), (",", 1715), ("P", 1252), ("O", 1063),
    ("^", 890), ("D", 869), ("A", 755), ("@", 713), ("R", 689), ("~", 538),
    ("!", 406), ("L", 252), ("&", 239), ("U", 223), ("$", 216), ("E", 148),
    ("#", 141), ("G", 137), ("T", 92), ("Z", 21), ("S", 18), ("X", 15)]


class TempDirMixin:
  """Temporary folders without absl flags (works under plain pytest)."""

  def tmpdir(self):
    path = tempfile.mkdtemp(prefix="m2m_data_prep_test_")
    self.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _tweets(path):
  """Independent reader: list of tweets, each a list of (token, tag)."""
  with open(path, encoding="utf-8") as f:
    blocks = f.read().strip("\n").split("\n\n")
  return [[tuple(line.split("\t")) for line in b.split("\n")] for b in blocks]


class RealTwitterTest(TempDirMixin, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data = twitter.build_twitter(substitute="random", use_cache=False)

  def test_classes_and_counts(self):
    d = self.data
    self.assertEqual(d.num_classes, 23)
    self.assertLen(d.y_train, 14614)
    self.assertEqual(list(zip(d.class_names, d.class_counts.tolist())),
                     PROVENANCE_COUNTS)
    # A ratio of integer counts, 2219 / 15 = 147.933...: places=2 checks the
    # rounded figure quoted in the docs.
    self.assertAlmostEqual(d.class_counts.max() / d.class_counts.min(),
                           147.93, places=2)
    self.assertLen(d.y_val, 4823)   # dev has no M / Y tokens
    self.assertLen(d.y_test, 7152)
    self.assertEqual((d.name, d.input_kind, d.clip_range),
                     ("twitter", "embedding", None))
    self.assertEqual(d.label, twitter.SUBSTITUTE_LABEL)
    self.assertIn("substitute", d.label)

  def test_window_features_match_independent_reference(self):
    d = self.data
    self.assertEqual(d.input_shape, (150,))
    self.assertEqual(d.x_train.dtype, np.float32)
    root = paths.resolve_data_dir(None)
    emb = {}

    def vec(w):
      if w not in emb:
        emb[w] = twitter.substitute_embedding(w)
      return emb[w]

    for split, fname, x in (
        ("train", "tweets-train.txt", d.x_train),
        ("test", "tweets-devtest.txt", d.x_test)):
      rows = []
      for tweet in _tweets(root / "twitter_pos/hendrycks" / fname):
        toks = ["</s>"] + [t for t, _ in tweet] + ["</s>"]
        for i, (_, tag) in enumerate(tweet):
          if tag not in ("M", "Y"):
            rows.append(np.concatenate([vec(toks[i]), vec(toks[i + 1]),
                                        vec(toks[i + 2])]))
      np.testing.assert_array_equal(x, np.stack(rows), err_msg=split)

  def test_ark_source_same_labels(self):
    ark = twitter.build_twitter(source="ark", use_cache=False)
    for name in ("y_train", "y_val", "y_test"):
      np.testing.assert_array_equal(getattr(ark, name),
                                    getattr(self.data, name))
    self.assertEqual(ark.class_names, self.data.class_names)

  def test_window_size(self):
    d = twitter.build_twitter(window=2, substitute="random", use_cache=False)
    self.assertEqual(d.input_shape, (250,))
    np.testing.assert_array_equal(d.x_train[:, 50:200], self.data.x_train)

  def test_deterministic_and_cached(self):
    cache_dir = self.tmpdir()
    first = twitter.build_twitter(cache_dir=cache_dir, substitute="random")
    with mock.patch.object(twitter, "_build_arrays",
                           side_effect=AssertionError("cache miss")):
      second = twitter.build_twitter(cache_dir=cache_dir, substitute="random")
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
      self.assertEqual(getattr(first, name).tobytes(),
                       getattr(self.data, name).tobytes())
      self.assertEqual(getattr(second, name).tobytes(),
                       getattr(self.data, name).tobytes())


class SubstituteEmbeddingTest(absltest.TestCase):

  def test_deterministic_golden_values(self):
    # Pinned values: the substitute must be the same on every machine. It is
    # float64 Box-Muller rounded to float32; NumPy's float64 log/sin/cos may
    # differ by an ulp or so between CPUs (its AVX-512 code paths), which can
    # move a rounded float32 value by 1 ulp (6e-8 relative): rtol 1e-6 allows
    # that, a different hash or transform changes the values completely.
    v = twitter.substitute_embedding("the")
    self.assertEqual(v.shape, (50,))
    self.assertEqual(v.dtype, np.float32)
    np.testing.assert_allclose(
        v[:4], [-0.018967652693390846, -0.04649700969457626,
                0.0711727887392044, 0.1659642457962036], rtol=1e-6)
    np.testing.assert_array_equal(v, twitter.substitute_embedding("The"))
    np.testing.assert_array_equal(v, twitter.substitute_embedding("THE"))
    self.assertFalse(np.array_equal(v, twitter.substitute_embedding("then")))

  def test_distribution(self):
    m = np.stack([twitter.substitute_embedding(f"w{i}") for i in range(400)])
    z = m.astype(np.float64) * np.sqrt(50)  # standard normal entries
    # Statistical, but deterministic (hashing): over 20000 entries the mean has
    # sd 7e-3 and the std 5e-3 (deltas of 4 and 6 sd); the mean squared norm of
    # 400 vectors (chi^2_50 / 50 each, variance 0.04) has sd 1e-2 (3 sd).
    # Measured: 2.4e-3, 7.1e-3 and 1.4e-2.
    self.assertAlmostEqual(z.mean(), 0.0, delta=0.03)
    self.assertAlmostEqual(z.std(), 1.0, delta=0.03)
    self.assertAlmostEqual(np.mean(np.sum(m**2, axis=1)), 1.0, delta=0.03)


class NgramSubstituteTest(parameterized.TestCase):
  """The character n-gram substitute (docs/data.md#twitter-pos)."""

  def test_shape_and_norm(self):
    v = twitter.ngram_embedding("Hello")
    self.assertEqual(v.shape, (twitter.SUBSTITUTE_DIM,))
    self.assertEqual(v.dtype, np.float32)
    self.assertEqual(twitter.NGRAM_DIM + len(twitter.ORTHO_FEATURES), 50)
    self.assertAlmostEqual(float(np.linalg.norm(v[:twitter.NGRAM_DIM].astype(np.float64))),
                           1.0, places=6)

  def test_char_ngrams_by_hand(self):
    self.assertEqual(twitter.char_ngrams("Cat"),
                     ["<ca", "cat", "at>", "<cat", "cat>", "<cat>"])
    self.assertEqual(twitter.char_ngrams("a"), ["<a>"])

  def test_ngram_part_is_normalised_sum_of_hashed_ngram_vectors(self):
    # Independent reference: float64 sum of each n-gram's vector, recomputed from SHAKE-256.
    grams = ["<ca", "cat", "at>", "<cat", "cat>", "<cat>"]
    total = np.sum([twitter._hashed_normal("m2m_tf/twitter-ngram-v1:" + g, 44)
                    .astype(np.float64) for g in grams], axis=0)
    np.testing.assert_allclose(twitter.ngram_embedding("CAT")[:44],
                               total / np.linalg.norm(total), rtol=1e-5, atol=1e-7)

  def test_same_vector_in_another_process(self):
    words = ["Hello", "#tag", "http://t.co/x", ":)", "naïve"]
    code = ("import sys, numpy as np; from data_prep import twitter; "
            "np.save(sys.stdout.buffer, np.stack([twitter.ngram_embedding(w) "
            "for w in sys.argv[1:]]))")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # A different PYTHONHASHSEED: the vector must not depend on Python's hash().
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code, *words], cwd=repo, env=env,
                         capture_output=True, check=True).stdout
    theirs = np.load(__import__("io").BytesIO(out))
    np.testing.assert_array_equal(theirs, np.stack([twitter.ngram_embedding(w)
                                                    for w in words]))

  def test_words_sharing_ngrams_are_closer(self):
    # Any two 44-d vectors have a chance cosine of sd ~0.15, so compare averages over many
    # pairs: a word and its inflection share most n-grams (expected cosine ~0.6), a word
    # and an unrelated word share none (expected 0).
    stems = ["walk", "talk", "play", "jump", "watch", "follow", "tweet", "love", "need",
             "want", "call", "start", "look", "work", "help", "listen", "laugh", "wish",
             "kill", "miss"]
    other = ["zebra", "oxygen", "quiz", "fjord", "vex", "bumpy", "glyph", "crwth", "equip",
             "kayak", "pixel", "banjo", "duvet", "hymn", "jolly", "ruby", "sofa", "tiger",
             "umbra", "yacht"]

    def cos(a, b):
      va = twitter.ngram_embedding(a)[:44].astype(np.float64)
      vb = twitter.ngram_embedding(b)[:44].astype(np.float64)
      return float(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb))

    shared = [cos(w + "ing", w + "ings") for w in stems]
    unrelated = [cos(w + "ing", o) for w, o in zip(stems, other)]
    self.assertGreater(np.mean(shared), 0.45)
    self.assertLess(abs(np.mean(unrelated)), 0.15)
    self.assertGreater(np.mean(shared) - np.mean(unrelated), 0.35)
    # Case does not change the n-gram part (only the orthographic features).
    np.testing.assert_array_equal(twitter.ngram_embedding("LOL")[:44],
                                  twitter.ngram_embedding("lol")[:44])

  @parameterized.parameters(
      # capitalised, all_caps, has_digit, mention_or_hashtag, url, punctuation_only
      ("the", [0, 0, 0, 0, 0, 0]),
      ("Hello", [1, 0, 0, 0, 0, 0]),
      ("USA", [1, 1, 0, 0, 0, 0]),
      ("I", [1, 0, 0, 0, 0, 0]),
      ("2day", [0, 0, 1, 0, 0, 0]),
      ("@bob", [0, 0, 0, 1, 0, 0]),
      ("#Win", [0, 0, 0, 1, 0, 0]),
      ("<@MENTION>", [0, 1, 0, 1, 0, 0]),
      ("<URL-twitter.com>", [0, 0, 0, 0, 1, 0]),
      ("http://bit.ly/abc", [0, 0, 0, 0, 1, 0]),
      ("www.cnn.com", [0, 0, 0, 0, 1, 0]),
      ("bit.ly/x1", [0, 0, 1, 0, 1, 0]),
      ("Mr.", [1, 0, 0, 0, 0, 0]),
      (":)", [0, 0, 0, 0, 0, 1]),
      ("...", [0, 0, 0, 0, 0, 1]),
      ("!!!", [0, 0, 0, 0, 0, 1]),
      ("<3", [0, 0, 1, 0, 0, 0]),
  )
  def test_orthographic_features(self, word, expected):
    np.testing.assert_array_equal(twitter.orthographic_features(word), expected)
    np.testing.assert_array_equal(twitter.ngram_embedding(word)[44:], expected)

  def test_unknown_substitute(self):
    with self.assertRaisesRegex(ValueError, "Unknown substitute 'glove'"):
      twitter.build_twitter(substitute="glove", use_cache=False)


class FakeTwitterTest(TempDirMixin, absltest.TestCase):

  TRAIN = "Hello\tV\nworld\tN\n\nfoo\tM\nbar\tV\n\n"
  DEV = "hello\tN\n\n"
  TEST = "world\tV\nHELLO\tN\n\n"

  def _root(self, train=TRAIN, dev=DEV, test=TEST):
    root = self.tmpdir()
    sub = os.path.join(root, "twitter_pos", "hendrycks")
    os.makedirs(sub)
    for name, text in (("tweets-train.txt", train), ("tweets-dev.txt", dev),
                       ("tweets-devtest.txt", test)):
      with open(os.path.join(sub, name), "w") as f:
        f.write(text)
    return root

  def _emb(self, text):
    path = os.path.join(self.tmpdir(), "emb.txt")
    with open(path, "w") as f:
      f.write(text)
    return path

  def _build(self, root, **kw):
    return twitter.build_twitter(root, verify_checksums=False,
                                 use_cache=False, **kw)

  def test_embeddings_file_by_hand(self):
    emb = self._emb("UUUNKKK 0 0\n</s>\t9 9\nhello\t1 2\nworld 3  4\n\n")
    d = self._build(self._root(), embeddings=emb)
    self.assertEqual(d.class_names, ("V", "N"))  # M has no test tokens
    self.assertEqual(d.label, "")
    # Train tweet 1: </s> Hello world </s>; tweet 2: </s> foo bar </s>.
    # "Hello" is found lowercased; foo, bar are unknown (UUUNKKK = 0 0).
    np.testing.assert_array_equal(d.x_train, [
        [9, 9, 1, 2, 3, 4],     # Hello (V)
        [1, 2, 3, 4, 9, 9],     # world (N)
        [0, 0, 0, 0, 9, 9],     # bar (V); foo (M) is context only
    ])
    np.testing.assert_array_equal(d.y_train, [0, 1, 0])
    np.testing.assert_array_equal(d.x_val, [[9, 9, 1, 2, 9, 9]])
    np.testing.assert_array_equal(d.y_val, [1])
    np.testing.assert_array_equal(d.x_test, [[9, 9, 3, 4, 1, 2],
                                             [3, 4, 1, 2, 9, 9]])
    np.testing.assert_array_equal(d.y_test, [0, 1])
    d0 = self._build(self._root(), embeddings=emb, window=0)
    np.testing.assert_array_equal(d0.x_train, [[1, 2], [3, 4], [0, 0]])
    spec = d.text_features
    self.assertEqual((spec["kind"], spec["window"], spec["pad_token"], spec["unk_row"]),
                     ("token_window", 1, "</s>", 0))
    table = {k: spec["embeddings"][r].tolist() for k, r in zip(spec["keys"], spec["rows"])}
    self.assertEqual(table, {"UUUNKKK": [0, 0], "</s>": [9, 9], "hello": [1, 2],
                             "world": [3, 4]})
    self.assertEqual(d0.text_features["window"], 0)

  def test_substitute_table_in_text_features(self):
    d = self._build(self._root(), substitute="random")
    spec = d.text_features
    self.assertEqual(spec["unk_row"], spec["rows"][spec["keys"].index("uuunkkk")])
    # Every lowercased word of the three files, plus both specials in their own case.
    self.assertEqual(set(spec["keys"]), {"</s>", "UUUNKKK", "uuunkkk", "hello", "world",
                                         "foo", "bar"})
    for key, row in zip(spec["keys"], spec["rows"]):
      np.testing.assert_array_equal(spec["embeddings"][row],
                                    twitter.substitute_embedding(key))

  def test_cache_without_table_is_rebuilt(self):
    root, cache_dir = self._root(), self.tmpdir()
    kw = dict(verify_checksums=False, cache_dir=cache_dir)
    first = twitter.build_twitter(root, **kw)
    # Rewrite the entry as the previous version wrote it: valid, but without the table.
    drop_from_cache_entry(cache_dir, ["embedding_keys", "embedding_rows", "embeddings"])
    build = mock.Mock(side_effect=twitter._build_arrays)
    with mock.patch.object(twitter, "_build_arrays", build):
      with self.assertLogs(level="WARNING") as logs:
        second = twitter.build_twitter(root, **kw)
      self.assertEqual(build.call_count, 1)
      self.assertIn("embedding_keys", "\n".join(logs.output))
      third = twitter.build_twitter(root, **kw)
      self.assertEqual(build.call_count, 1)  # the rebuilt entry holds the table
    for d in (second, third):
      self.assertEqual(d.text_features["keys"], first.text_features["keys"])
      np.testing.assert_array_equal(d.text_features["embeddings"],
                                    first.text_features["embeddings"])
      np.testing.assert_array_equal(d.x_train, first.x_train)

  def test_ngram_substitute_by_hand(self):
    d = self._build(self._root(), substitute="ngram")
    self.assertEqual(d.label, twitter.NGRAM_LABEL)
    self.assertIn("n-gram substitute", d.label)
    self.assertNotEqual(d.label, twitter.SUBSTITUTE_LABEL)
    e = twitter.ngram_embedding
    pad = e("</s>")
    # Train tweet 1: </s> Hello world </s>; tweet 2: </s> foo bar </s> (foo is M).
    np.testing.assert_array_equal(d.x_train, np.stack([
        np.concatenate([pad, e("Hello"), e("world")]),
        np.concatenate([e("Hello"), e("world"), pad]),
        np.concatenate([e("foo"), e("bar"), pad])]))
    # "HELLO" (test) keeps its own case: all caps, unlike "Hello" and "hello".
    np.testing.assert_array_equal(d.x_test[1, 50:100], e("HELLO"))
    self.assertEqual(d.x_test[1, 50 + 45], 1.0)
    self.assertEqual(d.x_val[0, 50 + 44], 0.0)  # "hello" is not capitalised
    spec = d.text_features
    self.assertEqual(set(spec["keys"]), {"</s>", "UUUNKKK", "Hello", "world", "foo", "bar",
                                         "hello", "HELLO"})
    table = {k: spec["embeddings"][r] for k, r in zip(spec["keys"], spec["rows"])}
    np.testing.assert_array_equal(table["UUUNKKK"], np.zeros(50))
    np.testing.assert_array_equal(spec["embeddings"][spec["unk_row"]], np.zeros(50))
    for key in ("Hello", "HELLO", "</s>", "bar"):
      np.testing.assert_array_equal(table[key], e(key))

  def test_embeddings_file_takes_priority_over_substitute(self):
    emb = self._emb("UUUNKKK 0 0\n</s>\t9 9\nhello\t1 2\nworld 3  4\n")
    plain = self._build(self._root(), embeddings=emb)
    ngram = self._build(self._root(), embeddings=emb, substitute="ngram")
    self.assertEqual(ngram.label, "")
    np.testing.assert_array_equal(ngram.x_train, plain.x_train)

  def test_cache_distinguishes_substitutes(self):
    root, cache_dir = self._root(), self.tmpdir()
    kw = dict(verify_checksums=False, cache_dir=cache_dir)
    build = mock.Mock(side_effect=twitter._build_arrays)
    with mock.patch.object(twitter, "_build_arrays", build):
      rnd = twitter.build_twitter(root, substitute="random", **kw)
      ngr = twitter.build_twitter(root, **kw)  # the default substitute is ngram
      self.assertEqual(build.call_count, 2)  # the second is not the first's entry
      rnd2 = twitter.build_twitter(root, substitute="random", **kw)
      ngr2 = twitter.build_twitter(root, substitute="ngram", **kw)
      self.assertEqual(build.call_count, 2)  # both now come from the cache
    self.assertEqual((rnd2.label, ngr2.label), (twitter.SUBSTITUTE_LABEL, twitter.NGRAM_LABEL))
    np.testing.assert_array_equal(rnd2.x_train, rnd.x_train)
    np.testing.assert_array_equal(ngr2.x_train, ngr.x_train)
    self.assertFalse(np.array_equal(rnd.x_train, ngr.x_train))
    np.testing.assert_array_equal(ngr.x_train[:, 50:100],
                                  np.stack([twitter.ngram_embedding(w)
                                            for w in ("Hello", "world", "bar")]))

  def test_exact_case_preferred_over_lowercase(self):
    vocab, m = twitter.load_embeddings(
        self._emb("UUUNKKK 0\nHello 1\nhello 2\nhello 3\n"))
    self.assertEqual(m[vocab["Hello"]].tolist(), [1.0])
    self.assertEqual(m[vocab["hello"]].tolist(), [2.0])  # first copy kept
    self.assertEqual(m.dtype, np.float32)

  def test_malformed_embeddings(self):
    for text, what, line in (
        ("UUUNKKK 0 0\nhello 1 2 3\n", "has 3 values, expected 2", 2),
        ("UUUNKKK 0 0\nhello 1 x\n", "non-numeric", 2),
        ("UUUNKKK 0 0\nhello\n", "malformed embedding line", 2),
    ):
      path = self._emb(text)
      with self.assertRaises(ValueError) as ctx:
        twitter.load_embeddings(path)
      self.assertIn(f"{path}:{line}", str(ctx.exception))
      self.assertIn(what, str(ctx.exception))
    with self.assertRaisesRegex(ValueError, "no 'UUUNKKK' vector"):
      twitter.load_embeddings(self._emb("hello 1 2\n"))

  def test_malformed_tweet_lines(self):
    for bad, what in (("x y\tV\tN\n", "3 fields"), ("xy V\n", "no tab"),
                      ("x\t \n", "empty tag"), ("\tV\n", "empty token")):
      root = self._root(train="a\tV\n\nb\tN\n" + bad)
      with self.assertRaises(ValueError) as ctx:
        self._build(root)
      self.assertIn("tweets-train.txt:4", str(ctx.exception))
      self.assertIn(what, str(ctx.exception))

  def test_unknown_tag(self):
    with self.assertRaisesRegex(ValueError,
                                r"tweets-devtest.txt:2: unknown tag 'Q'"):
      self._build(self._root(test="a\tV\nb\tQ\n"))
    with self.assertRaisesRegex(ValueError,
                                r"tweets-dev.txt:1: unknown tag 'Q'"):
      self._build(self._root(dev="a\tQ\n"))

  def test_missing_files(self):
    with self.assertRaisesRegex(paths.DataNotFoundError, "tweets-train.txt"):
      twitter.build_twitter(self.tmpdir())
    with self.assertRaisesRegex(paths.DataNotFoundError, "nope.txt"):
      self._build(self._root(), embeddings="/nope.txt")
    with self.assertRaisesRegex(ValueError, "Unknown source"):
      twitter.build_twitter(source="bogus")


if __name__ == "__main__":
  absltest.main()
