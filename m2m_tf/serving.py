"""f as a SavedModel with the endpoints `serve` (features), `serve_text` and `featurise_text`
(raw text, for datasets with `DatasetSplits.text_features`) and `class_names`.

The endpoints need only TensorFlow to load (docs/runs.md#serving-the-exported-model).
"""

import os
from typing import Any, Mapping, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

SERVE = "serve"
SERVE_TEXT = "serve_text"
FEATURISE_TEXT = "featurise_text"
CLASS_NAMES = "class_names"

# Every character for which Python's `str.isspace()` holds: the separators of `str.split()`,
# which data_prep uses to cut documents into words (tests/test_serving.py checks the list).
PYTHON_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
                     "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                     "\u2028\u2029\u202f\u205f\u3000")
_WHITESPACE_RUN = "[" + "".join(f"\\x{{{ord(c):X}}}" for c in PYTHON_WHITESPACE) + "]+"
# StringLookup's out-of-vocabulary token. It holds a space, so no token (whitespace split) and no
# Twitter token can equal it: a vocabulary entry "[UNK]" would otherwise be refused or merged.
_OOV_TOKEN = "[UNK] "


def split_whitespace(texts: tf.Tensor) -> tf.RaggedTensor:
  """Python's `str.split()`: tf.string [batch] -> ragged tf.string [batch, (words)].

  Any Unicode whitespace separates; `tf.strings.split` without `sep` knows only ASCII.
  """
  spaced = tf.strings.regex_replace(texts, _WHITESPACE_RUN, " ")
  words = tf.strings.split(spaced, sep=" ")
  return tf.ragged.boolean_mask(words, tf.strings.length(words) > 0)


class BagOfWordsFeaturiser(keras.layers.Layer):
  """Raw documents -> data_prep/reuters.py's binary bag of words (float32 [batch, vocab_size]).

  Raises ValueError for a vocabulary that repeats a word, holds a stop word or exceeds vocab_size-1.
  """

  def __init__(self, vocabulary: Sequence[str], stop_words: Sequence[str], vocab_size: int,
               **kwargs):
    super().__init__(trainable=False, **kwargs)
    self.vocabulary = tuple(str(w) for w in vocabulary)
    self.vocab_size = int(vocab_size)
    if len(self.vocabulary) > self.vocab_size - 1:
      raise ValueError(f"{len(self.vocabulary)} vocabulary words do not fit vocab_size="
                       f"{self.vocab_size} (index vocab_size-1 is UNK).")
    known = set(self.vocabulary)
    if len(known) != len(self.vocabulary):
      raise ValueError("The vocabulary repeats a word.")
    if known & set(stop_words):
      raise ValueError(f"Stop words in the vocabulary: {sorted(known & set(stop_words))[:5]}")
    stops = list(dict.fromkeys(str(w) for w in stop_words))  # unique, in order
    # Columns [OOV, word 0 .. n-1, stop words]: call() drops the stop words (they light nothing)
    # and moves OOV to the UNK feature vocab_size-1.
    self.lookup = keras.layers.StringLookup(
        vocabulary=list(self.vocabulary) + stops, mask_token=None, num_oov_indices=1,
        oov_token=_OOV_TOKEN, output_mode="multi_hot")
    self.built = True

  def call(self, texts):
    """tf.string [batch] -> float32 [batch, vocab_size]."""
    hot = tf.cast(self.lookup(split_whitespace(texts)), tf.float32)
    n = len(self.vocabulary)
    unused = tf.zeros([tf.shape(hot)[0], self.vocab_size - 1 - n], tf.float32)
    return tf.concat([hot[:, 1:n + 1], unused, hot[:, :1]], axis=1)

  @property
  def feature_shape(self):
    """The shape of one output row."""
    return (self.vocab_size,)

  @property
  def input_signature(self):
    """The serving input: a batch of documents."""
    return [tf.TensorSpec([None], tf.string, name="texts")]


class TokenWindowFeaturiser(keras.layers.Layer):
  """Token windows -> data_prep/twitter.py's window features (float32 [batch, (2w+1)*d]).

  A token takes its own row, else its lowercased form's, else `unk_row` (data_prep's `_lookup`).
  """

  def __init__(self, keys: Sequence[str], rows, embeddings, window: int, unk_row: int,
               **kwargs):
    super().__init__(trainable=False, **kwargs)
    self.window = int(window)
    self.unk_row = int(unk_row)
    embeddings = np.asarray(embeddings, np.float32)
    rows = np.asarray(rows, np.int64)
    if (len(rows) != len(keys) or rows.min(initial=0) < 0
        or max(rows.max(initial=0), self.unk_row) >= len(embeddings) or self.unk_row < 0):
      raise ValueError("Every key and UNK need one row of the embedding table.")
    self.lookup = keras.layers.StringLookup(
        vocabulary=[str(k) for k in keys], mask_token=None, num_oov_indices=1,
        oov_token=_OOV_TOKEN, output_mode="int")
    # Lookup index 0 is OOV: row -1 marks "not found".
    self.rows = tf.constant(np.concatenate([[-1], rows]), tf.int64)
    self.table = self.add_weight(shape=embeddings.shape, initializer="zeros", trainable=False,
                                 dtype="float32", name="embeddings")
    self.table.assign(embeddings)
    self.built = True

  def _rows(self, tokens):
    return tf.gather(self.rows, tf.cast(self.lookup(tokens), tf.int64))

  def call(self, tokens):
    """tf.string [batch, 2*window+1] -> float32 [batch, (2*window+1)*d]."""
    row = self._rows(tokens)
    # UTF-8 lowering is full, context-aware Unicode case mapping, as str.lower (test_serving.py).
    row = tf.where(row >= 0, row, self._rows(tf.strings.lower(tokens, encoding="utf-8")))
    row = tf.where(row >= 0, row, tf.constant(self.unk_row, tf.int64))
    vectors = tf.gather(tf.convert_to_tensor(self.table), row)
    return tf.reshape(vectors, [tf.shape(tokens)[0], -1])

  @property
  def feature_shape(self):
    """The shape of one output row."""
    return ((2 * self.window + 1) * int(self.table.shape[1]),)

  @property
  def input_signature(self):
    """The serving input: one window of tokens per row."""
    return [tf.TensorSpec([None, 2 * self.window + 1], tf.string, name="tokens")]


def text_featuriser(text_features: Mapping[str, Any]) -> keras.layers.Layer:
  """The featuriser layer of a `DatasetSplits.text_features` dict; ValueError if kind is unknown."""
  kind = text_features.get("kind")
  if kind == "bag_of_words":
    return BagOfWordsFeaturiser(text_features["vocabulary"], text_features["stop_words"],
                                text_features["vocab_size"], name="bag_of_words")
  if kind == "token_window":
    return TokenWindowFeaturiser(text_features["keys"], text_features["rows"],
                                 text_features["embeddings"], text_features["window"],
                                 text_features["unk_row"], name="token_window")
  raise ValueError(f"Unknown text_features kind {kind!r}; known: bag_of_words, token_window")


def _features_signature(f: keras.Model):
  """`serve`'s input signature, as `f.export` builds it for a single-input functional f."""
  if len(f.inputs) != 1:
    raise ValueError(f"Text serving needs a single-input model; {f.name} has {len(f.inputs)}.")
  x = f.inputs[0]
  return [tf.TensorSpec((None,) + tuple(x.shape[1:]), x.dtype, name=x.name)]


def export_saved_model(f: keras.Model, export_dir: Union[str, os.PathLike],
                       text_features: Optional[Mapping[str, Any]] = None, *,
                       class_names: Optional[Sequence[str]] = None,
                       verbose: bool = False) -> None:
  """Writes f (built; single-input for text) as a SavedModel to the new folder `export_dir`.

  Endpoints: `serve`, plus `serve_text` and `featurise_text` if `text_features` is given, and
  `class_names` if `class_names` is; with neither it is `f.export(export_dir)`. Raises
  ValueError when f's input shape is not the text features' shape.
  """
  if text_features is None and class_names is None:
    f.export(export_dir, format="tf_saved_model", verbose=verbose)
    return
  archive = keras.export.ExportArchive()
  # First endpoint: also `serving_default`, as with f.export.
  archive.track_and_add_endpoint(SERVE, f, _features_signature(f))
  if text_features is not None:
    _add_text_endpoints(archive, f, text_featuriser(text_features))
  if class_names is not None:
    names = tf.constant([str(n) for n in class_names])
    archive.add_endpoint(CLASS_NAMES, tf.function(lambda: names, input_signature=[]))
  archive.write_out(export_dir, verbose=verbose)


def _add_text_endpoints(archive, f: keras.Model, featuriser) -> None:
  """`serve_text` (raw input -> logits) and `featurise_text` (raw input -> features)."""
  signature = _features_signature(f)
  if tuple(signature[0].shape[1:]) != featuriser.feature_shape:
    raise ValueError(f"The text featurisation gives features of shape {featuriser.feature_shape}"
                     f", f takes {tuple(signature[0].shape[1:])}: not this dataset's model?")
  archive.track(featuriser)  # its lookup tables are resources, not variables

  def serve_text(inputs):
    return f(featuriser(inputs), training=False)

  def featurise_text(inputs):
    return featuriser(inputs)

  archive.add_endpoint(SERVE_TEXT, serve_text, input_signature=featuriser.input_signature)
  archive.add_endpoint(FEATURISE_TEXT, featurise_text, input_signature=featuriser.input_signature)
