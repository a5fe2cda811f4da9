"""Twitter POS tagging, one example per token: window features over word embeddings (a file, or
a deterministic offline substitute), the source copies and the featurisation serving needs.
See docs/data.md#twitter-pos.
"""

import collections
import functools
import hashlib
import math
import os
import pathlib
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from data_prep import cache as cache_lib
from data_prep import download
from data_prep import paths
from data_prep import splits

BUILDER_VERSION = "twitter-v1"
PAD_TOKEN = "</s>"
UNK_TOKEN = "UUUNKKK"
SUBSTITUTE_DIM = 50
SUBSTITUTE_LABEL = ("Twitter POS with offline substitute embeddings "
                    "(not the paper's embeddings)")
NGRAM_LABEL = ("Twitter POS with offline character n-gram substitute embeddings "
               "(not the paper's embeddings)")
# The label of each offline substitute ("random" keeps the label of the earlier tables).
SUBSTITUTE_LABELS = {"random": SUBSTITUTE_LABEL, "ngram": NGRAM_LABEL}
# ngram substitute: 44 hashed n-gram dims + 6 orthographic features = SUBSTITUTE_DIM.
NGRAM_DIM = 44
NGRAM_SIZES = (3, 4, 5)
ORTHO_FEATURES = ("capitalised", "all_caps", "has_digit", "mention_or_hashtag", "url",
                  "punctuation_only")
# URL shape: a scheme or www. prefix, the Hendrycks copy's `<URL-domain>`, or a bare domain.
_URL_RE = re.compile(r"^(?:https?://|www\.|<url)|^[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|"
                     r"edu|gov|ly|co|me|tv|uk|de|io)(?:/|$)", re.IGNORECASE)

SOURCES = {
    "hendrycks": ("twitter_pos/hendrycks/tweets-train.txt",
                  "twitter_pos/hendrycks/tweets-dev.txt",
                  "twitter_pos/hendrycks/tweets-devtest.txt"),
    "ark": ("twitter_pos/ark_v0.3/oct27.train",
            "twitter_pos/ark_v0.3/oct27.dev",
            "twitter_pos/ark_v0.3/oct27.test"),
}
SOURCES["ark_v0.3"] = SOURCES["ark"]

# A tweet: list of (token, tag, line number).
_Tweet = List[Tuple[str, str, int]]


def read_tagged_tweets(path: Union[str, os.PathLike]) -> List[_Tweet]:
  """Reads a `token<TAB>tag` file into tweets (blank line = end of tweet).

  Raises:
    ValueError: naming the file and line, for a line without a tab, with more
      than two tab-separated fields, or with an empty token or tag.
  """
  tweets, current = [], []
  with open(path, "r", encoding="utf-8") as f:
    for lineno, raw in enumerate(f, start=1):
      line = raw.rstrip("\r\n")
      if not line.strip():
        if current:
          tweets.append(current)
          current = []
        continue
      fields = line.split("\t")
      if len(fields) != 2:
        what = "no tab" if len(fields) == 1 else f"{len(fields)} fields"
        raise ValueError(f"{path}:{lineno}: malformed line ({what}; expected "
                         f"token<TAB>tag): {line[:60]!r}")
      token, tag = fields
      if not tag.strip():
        raise ValueError(f"{path}:{lineno}: malformed line (empty tag)")
      if not token:
        raise ValueError(f"{path}:{lineno}: malformed line (empty token)")
      current.append((token, tag.strip(), lineno))
  if current:
    tweets.append(current)
  return tweets


def load_embeddings(path: Union[str, os.PathLike]
                   ) -> Tuple[Dict[str, int], np.ndarray]:
  """Parses a `word f1 ... fd` embeddings file (a tab, if any, ends the word; blank lines
  skipped; a repeated word keeps its first vector).

  Returns:
    (word -> row, float32 matrix [num_words, d]).
  Raises:
    ValueError: naming file and line, for a line without values, a non-number, a dimension
      unlike the first line's, or no `UUUNKKK` vector.
  """
  words, rows, dim = {}, [], None
  with open(path, "r", encoding="utf-8") as f:
    for lineno, raw in enumerate(f, start=1):
      line = raw.rstrip("\r\n")
      if not line.strip():
        continue
      if "\t" in line:
        word, rest = line.split("\t", 1)
        values = rest.split()
      else:
        parts = line.split()
        word, values = parts[0], parts[1:]
      if not word or not values:
        raise ValueError(f"{path}:{lineno}: malformed embedding line (expected "
                         f"'word f1 ... fd'): {line[:60]!r}")
      try:
        vec = [float(v) for v in values]
      except ValueError:
        raise ValueError(f"{path}:{lineno}: non-numeric value in the vector of "
                         f"{word!r}") from None
      if dim is None:
        dim = len(vec)
      elif len(vec) != dim:
        raise ValueError(f"{path}:{lineno}: {word!r} has {len(vec)} values, "
                         f"expected {dim} (the first line's dimension)")
      if word not in words:
        words[word] = len(rows)
        rows.append(vec)
  if UNK_TOKEN not in words:
    raise ValueError(f"{path}: no {UNK_TOKEN!r} vector (needed for unknown "
                     "words); is this the right embeddings file?")
  return words, np.asarray(rows, dtype=np.float32)


def substitute_embedding(word: str, dim: int = SUBSTITUTE_DIM) -> np.ndarray:
  """The random substitute vector of `word` (float32 [dim]): SHAKE-256 of
  "m2m_tf/twitter-sub-v1:" + word.lower(), 8 bytes a coordinate, Box-Muller to standard
  normals, divided by sqrt(dim); the same on every machine
  (docs/data.md#embeddings-and-the-offline-substitute).
  """
  return _hashed_normal("m2m_tf/twitter-sub-v1:" + word.lower(), dim)


def _hashed_normal(key: str, dim: int) -> np.ndarray:
  """SHAKE-256 of `key` -> `dim` standard normals / sqrt(dim) (float32; Box-Muller)."""
  n_pairs = (dim + 1) // 2
  raw = hashlib.shake_256(key.encode("utf-8")).digest(16 * n_pairs)
  ints = np.frombuffer(raw, dtype="<u8")
  u = ((ints >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
  u1, u2 = u[0::2], u[1::2]
  r = np.sqrt(-2.0 * np.log(u1))
  z = np.empty(2 * n_pairs, dtype=np.float64)
  z[0::2] = r * np.cos(2.0 * math.pi * u2)
  z[1::2] = r * np.sin(2.0 * math.pi * u2)
  return (z[:dim] / math.sqrt(dim)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _ngram_vector(ngram: str) -> np.ndarray:
  """The fixed random vector of one character n-gram (float64 [NGRAM_DIM])."""
  vec = _hashed_normal("m2m_tf/twitter-ngram-v1:" + ngram, NGRAM_DIM).astype(np.float64)
  vec.flags.writeable = False  # shared by the cache
  return vec


def char_ngrams(word: str) -> List[str]:
  """The character 3-5-grams of "<" + word.lower() + ">", in order, repeats kept (sizes longer
  than the marked word give none)."""
  marked = "<" + word.lower() + ">"
  return [marked[i:i + n] for n in NGRAM_SIZES for i in range(len(marked) - n + 1)]


def orthographic_features(word: str) -> np.ndarray:
  """The six 0/1 features of `word` named by ORTHO_FEATURES (float32 [6]), defined in
  docs/data.md#embeddings-and-the-offline-substitute (url: `_URL_RE`)."""
  letters = [c for c in word if c.isalpha()]
  return np.array([
      word[:1].isupper(),
      len(letters) >= 2 and all(c.isupper() for c in letters),
      any(c.isdigit() for c in word),
      word.startswith(("@", "#", "<@")),
      _URL_RE.search(word) is not None,
      not any(c.isalnum() for c in word),
  ], dtype=np.float32)


def ngram_embedding(word: str) -> np.ndarray:
  """The n-gram substitute vector of `word` (float32 [SUBSTITUTE_DIM]): the L2-normalised sum of
  the `substitute_embedding`-style vectors (NGRAM_DIM) of its `char_ngrams`, then its
  `orthographic_features` (case matters there only)."""
  total = np.sum([_ngram_vector(g) for g in char_ngrams(word)], axis=0)
  total = total / max(np.linalg.norm(total), 1e-12)
  return np.concatenate([total.astype(np.float32), orthographic_features(word)])


def _lookup(token: str, vocab: Dict[str, int]) -> int:
  """Row of `token`: as is, else lowercased, else UUUNKKK."""
  row = vocab.get(token)
  if row is None:
    row = vocab.get(token.lower())
  if row is None:
    row = vocab[UNK_TOKEN]
  return row


def window_features(tweets: Sequence[_Tweet], vocab: Dict[str, int],
                    matrix: np.ndarray, window: int) -> np.ndarray:
  """[num_tokens, (2*window+1)*d] window features of every token, in order."""
  ids = []
  pad = _lookup(PAD_TOKEN, vocab)
  for tweet in tweets:
    padded = ([pad] * window + [_lookup(tok, vocab) for tok, _, _ in tweet] +
              [pad] * window)
    for i in range(len(tweet)):
      ids.append(padded[i:i + 2 * window + 1])
  ids = np.asarray(ids, dtype=np.int64).reshape(-1, 2 * window + 1)
  return matrix[ids].reshape(len(ids), -1).astype(np.float32)


def _substitute_table(all_tweets: Sequence[_Tweet], substitute: str = "random"
                     ) -> Tuple[Dict[str, int], np.ndarray]:
  """Substitute vectors for every word of the data + the two specials."""
  if substitute == "ngram":
    return _ngram_table(all_tweets)
  words = {PAD_TOKEN.lower(): 0, UNK_TOKEN.lower(): 1}
  for tweets in all_tweets:
    for tweet in tweets:
      for tok, _, _ in tweet:
        words.setdefault(tok.lower(), len(words))
  matrix = np.stack([substitute_embedding(w) for w in words])
  vocab = dict(words)
  vocab[PAD_TOKEN], vocab[UNK_TOKEN] = 0, 1
  return vocab, matrix


def _ngram_table(all_tweets: Sequence[_Tweet]) -> Tuple[Dict[str, int], np.ndarray]:
  """n-gram substitute vectors for every word of the data as written (case kept), `</s>` (its
  string's vector) and UUUNKKK (the zero vector; docs/data.md#twitter-pos)."""
  vocab = {PAD_TOKEN: 0, UNK_TOKEN: 1}
  for tweets in all_tweets:
    for tweet in tweets:
      for tok, _, _ in tweet:
        vocab.setdefault(tok, len(vocab))
  matrix = np.stack([np.zeros(SUBSTITUTE_DIM, np.float32) if w == UNK_TOKEN
                     else ngram_embedding(w) for w in vocab])
  return vocab, matrix


def table_arrays(vocab: Dict[str, int], matrix: np.ndarray) -> Dict[str, np.ndarray]:
  """The lookup table as cacheable arrays: keys (str), their rows (int64), the matrix."""
  keys = sorted(vocab)
  return {"embedding_keys": np.array(keys, dtype=np.str_),
          "embedding_rows": np.array([vocab[k] for k in keys], dtype=np.int64),
          "embeddings": np.asarray(matrix, dtype=np.float32)}


def text_features(keys: Sequence[str], rows: np.ndarray, matrix: np.ndarray,
                  window: int) -> dict:
  """The featurisation of raw tokens, as `DatasetSplits.text_features`.

  Returns:
    {"kind": "token_window", "keys" / "rows": word -> row of "embeddings" (looked up as is,
    else lowercased, else "unk_row"), "embeddings": float32 [rows, d], "window": tokens on
    each side, "pad_token": what pads a tweet, "unk_row": the UUUNKKK row}.
  """
  keys = tuple(str(k) for k in keys)
  rows = np.asarray(rows, dtype=np.int64)
  return {"kind": "token_window", "keys": keys, "rows": rows,
          "embeddings": np.asarray(matrix, dtype=np.float32),
          "window": int(window), "pad_token": PAD_TOKEN,
          "unk_row": int(rows[keys.index(UNK_TOKEN)])}


def _build_arrays(files, embeddings, window, substitute="random"
                 ) -> Dict[str, np.ndarray]:
  """Reads the three splits and builds features and labels."""
  split_tweets = [read_tagged_tweets(p) for p in files]
  train_counts = collections.Counter(
      tag for tweet in split_tweets[0] for _, tag, _ in tweet)
  for path, tweets in zip(files[1:], split_tweets[1:]):
    for tweet in tweets:
      for _, tag, lineno in tweet:
        if tag not in train_counts:
          raise ValueError(f"{path}:{lineno}: unknown tag {tag!r} (it never "
                           f"occurs in the training file {files[0]})")
  test_tags = {tag for tweet in split_tweets[2] for _, tag, _ in tweet}
  class_names = tuple(tag for tag, _ in train_counts.most_common()
                      if tag in test_tags)
  if not class_names:
    raise ValueError(f"No training tag occurs in the test file {files[2]}.")
  index = {tag: k for k, tag in enumerate(class_names)}
  if embeddings is None:
    vocab, matrix = _substitute_table(split_tweets, substitute)
  else:
    vocab, matrix = load_embeddings(embeddings)
  out = {"class_names": np.array(class_names, dtype=np.str_),
         **table_arrays(vocab, matrix)}
  for name, tweets in zip(("train", "val", "test"), split_tweets):
    x = window_features(tweets, vocab, matrix, window)
    tags = [tag for tweet in tweets for _, tag, _ in tweet]
    keep = np.array([t in index for t in tags], dtype=bool)
    out["x_" + name] = x[keep]
    out["y_" + name] = np.array([index[t] for t in tags if t in index],
                                dtype=np.int64)
  return out


def build_twitter(data_dir: Optional[Union[str, os.PathLike]] = None, *,
                  embeddings: Optional[Union[str, os.PathLike]] = None,
                  source: str = "hendrycks", window: int = 1,
                  substitute: str = "ngram",
                  cache_dir: Optional[Union[str, os.PathLike]] = None,
                  use_cache: bool = True,
                  verify_checksums: bool = True) -> splits.DatasetSplits:
  """Builds Twitter POS (23 classes, 14,614 training tokens, ratio 147.9;
  docs/data.md#twitter-pos).

  Args:
    data_dir: the data root holding `twitter_pos/`.
    embeddings: path of a `word f1 ... fd` file with a `UUUNKKK` row (priority over
      `substitute`), or None for the 50-d offline substitute.
    substitute: "ngram" (default) or "random".
    source: "hendrycks" (default) or "ark" (alias "ark_v0.3").
    window: context tokens on each side (features are (2*window+1)*d).
    cache_dir: see `cache.resolve_cache_dir`.
    use_cache: read/write the built arrays from/to the cache.
    verify_checksums: check the raw files' sha256 first (False for tests on fake files); the
      embeddings file has no reference digest, but its digest keys the cache.
  Returns:
    DatasetSplits with input_kind "embedding", clip_range None and `text_features`.
  """
  if source not in SOURCES:
    raise ValueError(f"Unknown source {source!r}; valid: {sorted(SOURCES)}")
  if window < 0:
    raise ValueError(f"window must be >= 0, got {window}")
  if substitute not in SUBSTITUTE_LABELS:
    raise ValueError(f"Unknown substitute {substitute!r}; valid: {sorted(SUBSTITUTE_LABELS)}")
  root = paths.resolve_data_dir(data_dir)
  files, digests = download.checked_raw_files(root, SOURCES[source], verify_checksums)
  if embeddings is not None:
    embeddings = pathlib.Path(embeddings)
    if not embeddings.is_file():
      raise paths.DataNotFoundError(
          f"Embeddings file {str(embeddings)!r} does not exist.")
    digests["embeddings"] = download.sha256_file(embeddings)
    substitute = "file"  # the file takes priority: the option plays no part
  else:
    digests["embeddings"] = ("offline-substitute-v1" if substitute == "random"
                             else f"offline-{substitute}-substitute-v1")
  options = dict(source=SOURCES[source][0], window=int(window), substitute=substitute)
  arrays = cache_lib.cached_arrays(
      "twitter", BUILDER_VERSION, digests, options,
      lambda: _build_arrays(files, embeddings, int(window), substitute),
      cache_dir=cache_dir, use_cache=use_cache,
      # A cache written before the table was stored is rebuilt.
      required=("embedding_keys", "embedding_rows", "embeddings"))
  return splits.from_arrays(
      "twitter", arrays, input_kind="embedding", clip_range=None,
      label=SUBSTITUTE_LABELS.get(substitute, ""),
      text_features=text_features(arrays["embedding_keys"].tolist(),
                                  arrays["embedding_rows"], arrays["embeddings"],
                                  int(window)))
