"""Reuters R52 as a binary bag of words (1000 words by default), with prior work's vocabulary
rule, a stratified validation hold-out and the featurisation that serving needs. See
docs/data.md#reuters-r52.
"""

import collections
import hashlib
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from data_prep import cache as cache_lib
from data_prep import download
from data_prep import paths
from data_prep import splits
from data_prep import stopwords

TRAIN_FILE = "r52/r52-train.txt"
TEST_FILE = "r52/r52-test.txt"
BUILDER_VERSION = "reuters-v1"

_Doc = Tuple[str, List[str], int]  # (label, words, line number)


def read_labeled_lines(path: Union[str, os.PathLike]) -> List[_Doc]:
  """Reads `label<TAB>text` lines into (label, words, line_number); words are `text.split()`,
  stop words kept.

  Raises:
    ValueError: naming the file and line, for a line without a tab, an empty label or empty
      text (blank lines included).
  """
  docs = []
  with open(path, "r", encoding="utf-8") as f:
    for lineno, raw in enumerate(f, start=1):
      line = raw.rstrip("\r\n")
      if "\t" not in line:
        raise ValueError(f"{path}:{lineno}: malformed line (no tab between "
                         f"label and text): {line[:60]!r}")
      label, text = line.split("\t", 1)
      label = label.strip()
      if not label:
        raise ValueError(f"{path}:{lineno}: malformed line (empty label)")
      words = text.split()
      if not words:
        raise ValueError(f"{path}:{lineno}: malformed line (empty text) for "
                         f"label {label!r}")
      docs.append((label, words, lineno))
  return docs


def remove_stop_words(words: Sequence[str]) -> List[str]:
  """Drops NLTK English stop words (exact, case-sensitive match)."""
  stop = stopwords.ENGLISH_STOP_WORD_SET
  return [w for w in words if w not in stop]


def build_vocabulary(documents: Sequence[Sequence[str]],
                     vocab_size: int) -> Dict[str, int]:
  """Word -> index by prior work's rule (docs/data.md#reuters-r52): ranks in
  `Counter.most_common` order; a word keeps its rank if rank < vocab_size and its count >= that
  of the rank vocab_size-2 word.

  Args:
    documents: token lists (stop words already removed), training only.
    vocab_size: the feature dimension; index vocab_size-1 is UNK.
  Returns:
    The words that keep their rank as index (the rank vocab_size-1 word included, with the UNK
    index); every other word is UNK.
  """
  if vocab_size < 2:
    raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
  counts = collections.Counter()
  for words in documents:
    counts.update(words)
  ranked = counts.most_common()
  unk = vocab_size - 1
  if len(ranked) > vocab_size - 2:
    threshold = ranked[vocab_size - 2][1]
  else:
    threshold = 0  # fewer words than the vocabulary: every word qualifies
  vocab = {}
  for rank, (word, count) in enumerate(ranked):
    if rank >= vocab_size:
      break
    vocab[word] = rank if count >= threshold else unk
  return vocab


def vocabulary_list(vocab: Dict[str, int], vocab_size: int) -> List[str]:
  """The words of `build_vocabulary`'s result that own an index (word i has index i; the rank
  vocab_size-1 word is UNK).

  Raises:
    ValueError: the indices below vocab_size-1 are not 0, 1, ..., n-1.
  """
  unk = vocab_size - 1
  words = sorted((i, w) for w, i in vocab.items() if i != unk)
  if [i for i, _ in words] != list(range(len(words))):
    raise ValueError("vocabulary indices are not contiguous from 0")
  return [w for _, w in words]


def text_features(vocabulary: Sequence[str], vocab_size: int) -> dict:
  """The featurisation of raw documents, as `DatasetSplits.text_features`.

  Returns:
    {"kind": "bag_of_words", "vocabulary": word i has feature i, "stop_words": tokens dropped
    before the lookup, "vocab_size": the dimension; any other `str.split()` token (case-sensitive)
    lights feature vocab_size-1}.
  """
  return {"kind": "bag_of_words", "vocabulary": tuple(str(w) for w in vocabulary),
          "stop_words": tuple(stopwords.ENGLISH_STOP_WORDS),
          "vocab_size": int(vocab_size)}


def binary_bag_of_words(documents: Sequence[Sequence[str]],
                        vocab: Dict[str, int], vocab_size: int) -> np.ndarray:
  """Binary presence matrix (float32, [len(documents), vocab_size])."""
  unk = vocab_size - 1
  x = np.zeros((len(documents), vocab_size), dtype=np.float32)
  for i, words in enumerate(documents):
    cols = [vocab.get(w, unk) for w in words]
    x[i, cols] = 1.0
  return x


def _hash_order(seed: int, index: int) -> bytes:
  """A platform-independent pseudo-random sort key for the hold-out."""
  return hashlib.sha256(f"r52-holdout:{seed}:{index}".encode()).digest()


def stratified_holdout(y: np.ndarray, num_classes: int, val_fraction: float,
                       split_seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """Per-class validation hold-out; returns sorted (train_idx, val_idx).

  A class of N_k >= 2 gives its first n_val = max(1, round(val_fraction * N_k)) documents in
  sha256("r52-holdout:{split_seed}:{index}") order (one document: none; val_fraction 0: none).
  """
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
  val = []
  for k in range(num_classes):
    members = np.flatnonzero(y == k)
    n_k = len(members)
    if val_fraction == 0.0 or n_k < 2:
      continue
    n_val = max(1, round(val_fraction * n_k))
    order = sorted(members.tolist(), key=lambda i: _hash_order(split_seed, i))
    val.extend(order[:n_val])
  val_idx = np.array(sorted(val), dtype=np.int64)
  train_mask = np.ones(len(y), dtype=bool)
  train_mask[val_idx] = False
  return np.flatnonzero(train_mask).astype(np.int64), val_idx


def _kept_classes(train_docs, test_docs, train_path, test_path, min_test_docs) -> set:
  """Steps 1-2: the labels with >= min_test_docs test documents (a test label unseen in
  training is an error naming its line)."""
  train_labels = collections.Counter(label for label, _, _ in train_docs)
  for label, _, lineno in test_docs:
    if label not in train_labels:
      raise ValueError(f"{test_path}:{lineno}: unknown label {label!r} (it "
                       f"never occurs in the training file {train_path})")
  test_counts = collections.Counter(label for label, _, _ in test_docs)
  kept = {label for label in train_labels
          if test_counts[label] >= min_test_docs}
  if not kept:
    raise ValueError(f"No class has >= {min_test_docs} test documents in "
                     f"{test_path}; every class would be empty.")
  return kept


def _build_arrays(train_path, test_path, val_fraction, split_seed, vocab_size,
                  min_test_docs) -> Dict[str, np.ndarray]:
  """Reads, filters, featurises and splits R52 (docs/data.md#reuters-r52); returns the arrays."""
  train_docs = read_labeled_lines(train_path)
  test_docs = read_labeled_lines(test_path)
  kept = _kept_classes(train_docs, test_docs, train_path, test_path, min_test_docs)
  kept_train = [d for d in train_docs if d[0] in kept]
  kept_test = [d for d in test_docs if d[0] in kept]
  class_names = tuple(label for label, _ in collections.Counter(
      d[0] for d in kept_train).most_common())
  index = {name: k for k, name in enumerate(class_names)}

  train_words = [remove_stop_words(w) for _, w, _ in kept_train]
  test_words = [remove_stop_words(w) for _, w, _ in kept_test]
  vocab = build_vocabulary(train_words, vocab_size)
  x_all = binary_bag_of_words(train_words, vocab, vocab_size)
  y_all = np.array([index[d[0]] for d in kept_train], dtype=np.int64)
  x_test = binary_bag_of_words(test_words, vocab, vocab_size)
  y_test = np.array([index[d[0]] for d in kept_test], dtype=np.int64)

  train_idx, val_idx = stratified_holdout(y_all, len(class_names),
                                          val_fraction, split_seed)
  y_train = y_all[train_idx]
  left = np.bincount(y_train, minlength=len(class_names))
  for k, name in enumerate(class_names):
    if left[k] == 0:
      raise ValueError(
          f"Class {name!r} is empty: none of its {int((y_all == k).sum())} "
          f"training documents ({train_path}) is left after holding out "
          f"val_fraction={val_fraction} for validation.")
  return {
      "x_train": x_all[train_idx], "y_train": y_train,
      "x_val": x_all[val_idx], "y_val": y_all[val_idx],
      "x_test": x_test, "y_test": y_test,
      "class_names": np.array(class_names, dtype=np.str_),
      "vocabulary": np.array(vocabulary_list(vocab, vocab_size), dtype=np.str_),
  }


def build_reuters(data_dir: Optional[Union[str, os.PathLike]] = None, *,
                  val_fraction: float = 0.1, split_seed: int = 0,
                  vocab_size: int = 1000, min_test_docs: int = 5,
                  cache_dir: Optional[Union[str, os.PathLike]] = None,
                  use_cache: bool = True,
                  verify_checksums: bool = True) -> splits.DatasetSplits:
  """Builds Reuters R52 (36 classes, 6,436 training docs, ratio 710; docs/data.md#reuters-r52).

  Args:
    data_dir: the data root holding `r52/`; see `paths.resolve_data_dir`.
    val_fraction: fraction of each class's training docs held out.
    split_seed: seed of the hold-out (fixed, independent of run seeds).
    vocab_size: feature dimension (index vocab_size-1 is UNK).
    min_test_docs: classes with fewer test documents are dropped.
    cache_dir: see `cache.resolve_cache_dir`.
    use_cache: read/write the built arrays from/to the cache.
    verify_checksums: check the raw files' sha256 first (docs/data.md#checksums; False only for
      tests on small fake files).
  Returns:
    DatasetSplits with input_kind "bow", clip_range (0, 1) and `text_features`.
  """
  root = paths.resolve_data_dir(data_dir)
  (train_path, test_path), digests = download.checked_raw_files(
      root, (TRAIN_FILE, TEST_FILE), verify_checksums)
  options = dict(val_fraction=float(val_fraction), split_seed=int(split_seed),
                 vocab_size=int(vocab_size), min_test_docs=int(min_test_docs))
  arrays = cache_lib.cached_arrays(
      "reuters", BUILDER_VERSION, digests, options,
      lambda: _build_arrays(train_path, test_path, **options),
      cache_dir=cache_dir, use_cache=use_cache,
      # A cache written before the vocabulary was stored is rebuilt.
      required=("vocabulary",))
  return splits.from_arrays(
      "reuters", arrays, input_kind="bow", clip_range=(0.0, 1.0), label="",
      text_features=text_features(arrays["vocabulary"].tolist(), vocab_size))
