"""Tests of m2m_tf/serving.py: raw text through the exported SavedModel equals data_prep's x."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from absl.testing import absltest
from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from data_prep import paths
from data_prep import reuters
from data_prep import stopwords
from data_prep import twitter
from m2m_tf import metrics
from m2m_tf import serving
from m2m_tf.models import build_classifier

# Run in a fresh interpreter that imports tensorflow only: what a user of the SavedModel has.
# argv: model dir, serialized tf.string input, serialized float32 features, output dir.
_SERVE_SCRIPT = """
import os, sys
import tensorflow as tf
model_dir, raw_file, x_file, out_dir = sys.argv[1:]
m = tf.saved_model.load(model_dir)
raw = tf.io.parse_tensor(tf.io.read_file(raw_file), tf.string)
x = tf.io.parse_tensor(tf.io.read_file(x_file), tf.float32)
for name, t in (("text_logits", m.serve_text(raw)), ("features", m.featurise_text(raw)),
                ("logits", m.serve(x)),
                ("default", m.signatures["serving_default"](features=x)["output_0"])):
  tf.io.write_file(os.path.join(out_dir, name), tf.io.serialize_tensor(t))
ours = sorted({k.split(".")[0] for k in sys.modules} & {"m2m_tf", "data_prep"})
tf.io.write_file(os.path.join(out_dir, "modules"), ",".join(ours))
"""


def _tmpdir(test):
  path = tempfile.mkdtemp(prefix="m2m_serving_test_")
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


def _read_texts(path, keep):
  """Independent reader: (labels, raw texts) of the lines labelled in `keep`, in file order."""
  labels, texts = [], []
  with open(path, encoding="utf-8") as f:
    for line in f:
      label, text = line.rstrip("\r\n").split("\t", 1)
      if label in keep:
        labels.append(label)
        texts.append(text)
  return labels, texts


def _serve_in_subprocess(test, model_dir, raw, x):
  """Applies the SavedModel's endpoints in a tensorflow-only interpreter; returns its outputs."""
  work = _tmpdir(test)
  raw_file, x_file = os.path.join(work, "raw"), os.path.join(work, "x")
  tf.io.write_file(raw_file, tf.io.serialize_tensor(tf.constant(raw, tf.string)))
  tf.io.write_file(x_file, tf.io.serialize_tensor(tf.constant(x, tf.float32)))
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  proc = subprocess.run([sys.executable, "-c", _SERVE_SCRIPT, model_dir, raw_file, x_file, work],
                        cwd=work, env=env, capture_output=True, text=True, timeout=300)
  test.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
  out = {name: tf.io.parse_tensor(tf.io.read_file(os.path.join(work, name)), tf.float32).numpy()
         for name in ("text_logits", "features", "logits", "default")}
  with open(os.path.join(work, "modules")) as fh:
    out["modules"] = fh.read()
  return out


def _bacc(y, logits, num_classes):
  cm = metrics.confusion_matrix(y, np.argmax(logits, axis=1), num_classes)
  return metrics.balanced_accuracy(metrics.per_class_recall(cm))


class WhitespaceTest(parameterized.TestCase, tf.test.TestCase):

  def test_whitespace_list_is_pythons(self):
    python = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    self.assertEqual(list(serving.PYTHON_WHITESPACE), python)

  @parameterized.parameters(
      "", "   ", "one", "  lead and trail  ", "tab\tnew\nline\r\nvt\x0bff\x0c",
      "fs\x1cgs\x1drs\x1eus\x1fnel\x85nbsp\xa0ogham\u1680en\u2002hair\u200aline\u2028"
      "para\u2029nnb\u202fmm\u205fideo\u3000end",
      "zero\u200bwidth is no space", "caf\u00e9 \u65e5\u672c \U0001F600x")
  def test_split_equals_str_split(self, text):
    got = serving.split_whitespace(tf.constant([text, "a " + text])).to_list()
    self.assertEqual([[w.decode("utf-8") for w in row] for row in got],
                     [text.split(), ("a " + text).split()])


class BagOfWordsFeaturiserTest(tf.test.TestCase):

  def test_hand_computed(self):
    # vocab_size 6: "apple" 0, "Banana" 1, "cherry" 2; index 3 and 4 unused; 5 is UNK.
    layer = serving.BagOfWordsFeaturiser(["apple", "Banana", "cherry"], ["the", "a", "of"], 6)
    x = layer(tf.constant([
        "apple the apple",          # a stop word lights nothing
        "banana Banana",            # case-sensitive: "banana" is UNK
        "the a of",                 # only stop words: all zero, UNK included
        "",                         # empty document
        "cherry\u3000zebra\tapple",  # Unicode whitespace; zebra is UNK
        "[UNK] [UNK] ",             # StringLookup's default OOV token is an ordinary word here
    ]))
    self.assertAllEqual(x, [[1, 0, 0, 0, 0, 0],
                            [0, 1, 0, 0, 0, 1],
                            [0, 0, 0, 0, 0, 0],
                            [0, 0, 0, 0, 0, 0],
                            [1, 0, 1, 0, 0, 1],
                            [0, 0, 0, 0, 0, 1]])
    self.assertEqual(x.dtype, tf.float32)

  def test_matches_data_prep_on_fake_corpus(self):
    # build_vocabulary's rule, including the rank vocab_size-1 word sharing UNK.
    docs = [["w0"] * 5 + ["w1"] * 4 + ["w2"] * 3 + ["w3"] * 3 + ["w4"] * 3 + ["w5"]]
    vocab = reuters.build_vocabulary(docs, 4)
    words = reuters.vocabulary_list(vocab, 4)
    self.assertEqual(words, ["w0", "w1", "w2"])
    texts = ["w4", "w5", "new", "w1 w3", "w0 the w2 is", "the", "w3 w3"]
    want = reuters.binary_bag_of_words(
        [reuters.remove_stop_words(t.split()) for t in texts], vocab, 4)
    layer = serving.text_featuriser(reuters.text_features(words, 4))
    self.assertAllEqual(layer(tf.constant(texts)), want)

  def test_refuses_inconsistent_specs(self):
    with self.assertRaisesRegex(ValueError, "do not fit"):
      serving.BagOfWordsFeaturiser(["a", "b", "c"], [], 3)
    with self.assertRaisesRegex(ValueError, "Stop words in the vocabulary"):
      serving.BagOfWordsFeaturiser(["a", "the"], ["the"], 5)
    with self.assertRaisesRegex(ValueError, "repeats"):
      serving.BagOfWordsFeaturiser(["a", "a"], [], 5)
    with self.assertRaisesRegex(ValueError, "Unknown text_features kind"):
      serving.text_featuriser({"kind": "pixels"})


class RealReutersServingTest(tf.test.TestCase):
  """On the real R52 files (../shared/data, docs/data.md#reuters-r52)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data = reuters.build_reuters(use_cache=False)
    root = paths.resolve_data_dir(None)
    keep = set(cls.data.class_names)
    _, cls.test_texts = _read_texts(root / reuters.TEST_FILE, keep)
    cls.train_labels, cls.train_texts = _read_texts(root / reuters.TRAIN_FILE, keep)

  def test_text_features_spec(self):
    spec = self.data.text_features
    self.assertEqual(spec["kind"], "bag_of_words")
    self.assertEqual(spec["vocab_size"], 1000)
    self.assertLen(spec["vocabulary"], 999)  # the rank-999 word ties with rank 998: UNK
    self.assertEqual(spec["stop_words"], stopwords.ENGLISH_STOP_WORDS)

  def test_featuriser_reproduces_every_document(self):
    layer = serving.text_featuriser(self.data.text_features)
    self.assertLen(self.test_texts, 2530)
    self.assertAllEqual(layer(tf.constant(self.test_texts)), self.data.x_test)
    # Training documents: the builder's train/val rows are the file's rows at the hold-out's
    # indices (split_seed 0, val_fraction 0.1: build_reuters' defaults).
    index = {c: k for k, c in enumerate(self.data.class_names)}
    y_file = np.array([index[c] for c in self.train_labels], np.int64)
    train_idx, val_idx = reuters.stratified_holdout(y_file, 36, 0.1, 0)
    self.assertAllEqual(y_file[train_idx], self.data.y_train)
    self.assertAllEqual(y_file[val_idx], self.data.y_val)
    x_file = layer(tf.constant(self.train_texts)).numpy()
    self.assertAllEqual(x_file[train_idx], self.data.x_train)
    self.assertAllEqual(x_file[val_idx], self.data.x_val)

  @pytest.mark.slow
  def test_exported_model_serves_raw_text(self):
    d = self.data
    keras.utils.set_random_seed(0)
    f = build_classifier("mlp", d.input_shape, d.num_classes, hidden_units=(32,))
    f.compile(optimizer=keras.optimizers.Adam(1e-2),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    f.fit(d.x_train, d.y_train, batch_size=256, epochs=1, verbose=0)  # 23 steps
    want = f.predict(d.x_test, batch_size=4096, verbose=0)
    self.assertGreater(len(set(np.argmax(want, 1).tolist())), 5)  # a non-trivial classifier

    model_dir = os.path.join(_tmpdir(self), "saved_model")
    serving.export_saved_model(f, model_dir, d.text_features)
    got = _serve_in_subprocess(self, model_dir, self.test_texts, d.x_test)

    self.assertEqual(got["modules"], "")  # neither m2m_tf nor data_prep was needed
    self.assertAllEqual(got["features"], d.x_test)
    self.assertAllClose(got["logits"], want, rtol=1e-5, atol=1e-5)
    self.assertAllEqual(got["default"], got["logits"])
    self.assertAllEqual(got["text_logits"], got["logits"])
    self.assertAllEqual(np.argmax(got["text_logits"], 1), np.argmax(want, 1))
    self.assertEqual(_bacc(d.y_test, got["text_logits"], d.num_classes),
                     _bacc(d.y_test, want, d.num_classes))

  def test_serve_endpoint_is_unchanged(self):
    d = self.data
    f = build_classifier("mlp", d.input_shape, d.num_classes, hidden_units=(8,))
    ours, plain = os.path.join(_tmpdir(self), "ours"), os.path.join(_tmpdir(self), "plain")
    serving.export_saved_model(f, ours, d.text_features, class_names=d.class_names)
    f.export(plain, format="tf_saved_model", verbose=False)
    a, b = tf.saved_model.load(ours), tf.saved_model.load(plain)
    for name in ("serve", "serving_default"):
      self.assertEqual(a.signatures[name].structured_input_signature,
                       b.signatures[name].structured_input_signature)
      self.assertEqual(a.signatures[name].structured_outputs,
                       b.signatures[name].structured_outputs)
    self.assertEqual(set(a.signatures), {"serve", "serving_default", "serve_text",
                                         "featurise_text", "class_names"})
    self.assertEqual(set(b.signatures), {"serve", "serving_default"})
    x = d.x_test[:64]
    self.assertAllEqual(a.serve(x), b.serve(x))
    self.assertEqual([n.decode() for n in a.class_names().numpy()], list(d.class_names))


def _windows(path, window, keep):
  """Independent windows: each kept token with `window` neighbours a side, </s>-padded tweets."""
  windows, tweet = [], []

  def flush():
    padded = ["</s>"] * window + [tok for tok, _ in tweet] + ["</s>"] * window
    windows.extend(padded[i:i + 2 * window + 1] for i, (_, tag) in enumerate(tweet)
                   if tag in keep)
    tweet.clear()

  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        tweet.append(line.rstrip("\r\n").split("\t"))
      else:
        flush()
  flush()
  return windows


class TokenWindowFeaturiserTest(tf.test.TestCase):

  def test_hand_computed(self):
    # Rows: Apple 1, apple 2, UUUNKKK 0, </s> 9, \u00e4pfel 5 (each row is [v, -v]).
    layer = serving.TokenWindowFeaturiser(
        ["Apple", "apple", "UUUNKKK", "</s>", "\u00e4pfel"], [1, 2, 0, 3, 4],
        [[0, 0], [1, -1], [2, -2], [9, -9], [5, -5]], window=1, unk_row=0)
    x = layer(tf.constant([["</s>", "Apple", "APPLE"],           # as is, then lowercased
                           ["zebra", "apple", "</s>"],           # unknown: UUUNKKK's row
                           ["\u00c4PFEL", "uuunkkk", "[UNK] "]])) # Unicode lowercasing
    self.assertAllEqual(x, [[9, -9, 1, -1, 2, -2],
                            [0, 0, 2, -2, 9, -9],
                            [5, -5, 0, 0, 0, 0]])
    self.assertEqual(layer.input_signature[0].shape.as_list(), [None, 3])

  def test_lowercasing_is_pythons(self):
    words = ["Hello", "\u0130stanbul", "\u039f\u0394\u039f\u03a3", "\u01c5", "\u1e9e",
             "\U00010400", "\u2167", "\u00c5NGSTR\u00d6M", "#TGIF", ":D"]
    lowered = tf.strings.lower(tf.constant(words), encoding="utf-8").numpy()
    self.assertEqual([w.decode("utf-8") for w in lowered], [w.lower() for w in words])

  def test_refuses_rows_outside_the_table(self):
    with self.assertRaisesRegex(ValueError, "need one row"):
      serving.TokenWindowFeaturiser(["a", "UUUNKKK"], [0, 2], [[0.0], [1.0]], 0, 1)


class RealTwitterServingTest(parameterized.TestCase, tf.test.TestCase):
  """On the real Twitter POS files (docs/data.md#twitter-pos), offline substitute embeddings."""

  @parameterized.parameters(1, 2)
  def test_featuriser_reproduces_every_token(self, window):
    d = twitter.build_twitter(window=window, use_cache=False)
    root = paths.resolve_data_dir(None)
    layer = serving.text_featuriser(d.text_features)
    keep = set(d.class_names)
    for split, rel in zip(("train", "val", "test"), twitter.SOURCES["hendrycks"]):
      windows = _windows(root / rel, window, keep)
      self.assertAllEqual(layer(tf.constant(windows)), getattr(d, "x_" + split))

  def test_ngram_substitute_featuriser(self):
    d = twitter.build_twitter(substitute="ngram", use_cache=False)
    root = paths.resolve_data_dir(None)
    layer = serving.text_featuriser(d.text_features)
    keep = set(d.class_names)
    for split, rel in zip(("train", "val", "test"), twitter.SOURCES["hendrycks"]):
      windows = _windows(root / rel, 1, keep)
      self.assertAllEqual(layer(tf.constant(windows)), getattr(d, "x_" + split))
    # A word outside the data maps to UUUNKKK, the zero vector (docs/data.md#twitter-pos),
    # not to its n-gram vector; a word of the data keeps its own case's vector.
    got = layer(tf.constant([["</s>", "Zyxwvutsrq", "lol"]])).numpy()
    self.assertAllEqual(got[0, 50:100], np.zeros(50))
    self.assertAllEqual(got[0, :50], twitter.ngram_embedding("</s>"))
    self.assertAllEqual(got[0, 100:], twitter.ngram_embedding("lol"))

  def test_exported_model_serves_tokens(self):
    d = twitter.build_twitter(use_cache=False)
    windows = _windows(paths.resolve_data_dir(None) / twitter.SOURCES["hendrycks"][2], 1,
                       set(d.class_names))
    keras.utils.set_random_seed(0)
    f = build_classifier("mlp", d.input_shape, d.num_classes, hidden_units=(16,))
    f.compile(optimizer=keras.optimizers.Adam(1e-2),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    f.fit(d.x_train, d.y_train, batch_size=512, epochs=1, verbose=0)
    model_dir = os.path.join(_tmpdir(self), "saved_model")
    serving.export_saved_model(f, model_dir, d.text_features)
    m = tf.saved_model.load(model_dir)
    self.assertAllEqual(m.featurise_text(tf.constant(windows)), d.x_test)
    got = m.serve_text(tf.constant(windows)).numpy()
    self.assertAllEqual(got, m.serve(d.x_test))
    self.assertAllEqual(np.argmax(got, 1), np.argmax(f.predict(d.x_test, verbose=0), 1))


class NoTextFeaturesTest(tf.test.TestCase):

  def test_plain_export_without_text_features(self):
    f = build_classifier("mlp", (5,), 3, hidden_units=(4,))
    path = os.path.join(_tmpdir(self), "saved_model")
    serving.export_saved_model(f, path, None)
    m = tf.saved_model.load(path)
    self.assertEqual(set(m.signatures), {"serve", "serving_default"})
    x = np.random.default_rng(0).uniform(size=(4, 5)).astype(np.float32)
    self.assertAllClose(m.serve(x), f(x), rtol=1e-6, atol=1e-6)

  def test_refuses_a_model_of_other_features(self):
    f = build_classifier("mlp", (5,), 3, hidden_units=(4,))
    spec = reuters.text_features(["net", "profit"], 6)
    with self.assertRaisesRegex(ValueError, r"shape \(6,\), f takes \(5,\)"):
      serving.export_saved_model(f, os.path.join(_tmpdir(self), "m"), spec)


if __name__ == "__main__":
  absltest.main()
