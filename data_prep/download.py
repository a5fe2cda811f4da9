"""Download the raw Reuters / Twitter files at the commits of `RAW_FILES`, sha256-verified and
written atomically; the builders' checksum checks (docs/data.md#checksums).

  python -m data_prep.download --dataset reuters|twitter --data_dir DIR
"""

import argparse
import dataclasses
import hashlib
import os
import pathlib
import sys
import urllib.request
from typing import Dict, Optional, Sequence, Union

from data_prep import atomic
from data_prep import paths as paths_lib

_CHUNK = 1 << 20

_HENDRYCKS = ("hendrycks/error-detection",
              "276d605bfa9a9bd7701bd88937c537c3fcab94cf")
_ARK = ("brendano/ark-tweet-nlp", "72755ccd1b29ba8e1dbbb49efe57ba9723c0013b")


class ChecksumError(ValueError):
  """A file's sha256 is not the one recorded in `RAW_FILES` (docs/data.md#checksums)."""


@dataclasses.dataclass(frozen=True)
class RawFile:
  """One raw data file: where it comes from and its sha256.

  Attributes:
    repo: GitHub "owner/name", or "" when there is no public single-file URL.
    commit: the snapshot commit.
    source_path: the path inside that repository.
    sha256: hex digest of the file.
  """
  repo: str
  commit: str
  source_path: str
  sha256: str

  @property
  def url(self) -> Optional[str]:
    """The raw.githubusercontent.com URL, or None when not downloadable."""
    if not self.repo:
      return None
    return (f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/"
            f"{self.source_path}")


# Relative path under the data root -> source and checksum (docs/data.md#checksums).
RAW_FILES: Dict[str, RawFile] = {
    "r52/r52-train.txt": RawFile(
        *_HENDRYCKS, "NLP/Categorization/data/r52-train.txt",
        "2bb8c5e400bd24a1fb3c5a8fb86bb9751c224e66b542cf75bc2ae0aa3952b5b9"),
    "r52/r52-test.txt": RawFile(
        *_HENDRYCKS, "NLP/Categorization/data/r52-test.txt",
        "05dbdf3a88be730ff614126fdd6c8912a8a3e03bb77be81c84eb12fb0144a7af"),
    "twitter_pos/hendrycks/tweets-train.txt": RawFile(
        *_HENDRYCKS, "NLP/POS/data/Tweets/tweets-train.txt",
        "0eeb02801b1097aa32bfac490a61c0919c9e74f2c74dd0048b520041bf218f7c"),
    "twitter_pos/hendrycks/tweets-dev.txt": RawFile(
        *_HENDRYCKS, "NLP/POS/data/Tweets/tweets-dev.txt",
        "304eedc25cf601111ed2daac954092a026e11bc515effda8f9de09616e91dbc8"),
    "twitter_pos/hendrycks/tweets-devtest.txt": RawFile(
        *_HENDRYCKS, "NLP/POS/data/Tweets/tweets-devtest.txt",
        "5bb2323a63a17d073468b9436980232e2e7b92d0dc1e5e46e722aae189229e3c"),
    "twitter_pos/ark_v0.3/oct27.train": RawFile(
        *_ARK, "data/twpos-data-v0.3/oct27.splits/oct27.train",
        "e55a63da62838a28b308bd1be0b5c903ac242ef208dc59838f4b39aa33b11948"),
    "twitter_pos/ark_v0.3/oct27.dev": RawFile(
        *_ARK, "data/twpos-data-v0.3/oct27.splits/oct27.dev",
        "046e9c57ed2549b4dec08a9a7bccf8ec7f742faaa7b55d840408f2dfd1356851"),
    "twitter_pos/ark_v0.3/oct27.test": RawFile(
        *_ARK, "data/twpos-data-v0.3/oct27.splits/oct27.test",
        "77f868fcd300d0acdd7bb8db28c961fcbe50d9cd0d48046e8fbec4b9f86bf814"),
    "cifar10_jpeg/train.npz": RawFile(
        "", "", "",
        "f1722bc4e7bcadbbbb3bac3c3e29337733c737aeaaf1089c0cc538696882d9af"),
    "cifar10_jpeg/test.npz": RawFile(
        "", "", "",
        "74ae9bc264087277d7b0f9a5474201232b1792bf0645a514d4b8d786ae183922"),
}

# Which files `--dataset` fetches.
DATASET_FILES: Dict[str, Sequence[str]] = {
    "reuters": ("r52/r52-train.txt", "r52/r52-test.txt"),
    "twitter": tuple(k for k in RAW_FILES if k.startswith("twitter_pos/")),
}


def expected_sha256(relative_path: str) -> str:
  """The recorded sha256 of a raw file, by its path under the data root."""
  try:
    return RAW_FILES[relative_path].sha256
  except KeyError:
    raise KeyError(f"No recorded checksum for {relative_path!r}; known: "
                   f"{sorted(RAW_FILES)}") from None


def sha256_file(path: Union[str, os.PathLike]) -> str:
  """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      digest.update(chunk)
  return digest.hexdigest()


def verify_sha256(path: Union[str, os.PathLike], expected: str) -> str:
  """Checks that a file's sha256 equals `expected` (hex, case-insensitive).

  Returns:
    The digest (reusable as a cache key).
  Raises:
    ChecksumError: on mismatch, naming the file, both digests and the fix.
  """
  actual = sha256_file(path)
  if actual != expected.lower():
    raise ChecksumError(
        f"Checksum mismatch for {str(path)!r}: sha256 is {actual}, expected "
        f"{expected.lower()} (PROVENANCE.md). The file is corrupt, truncated "
        "or a different version; re-download it with "
        "`python -m data_prep.download --dataset DATASET --data_dir DIR`.")
  return actual


def download_file(url: str, dest: Union[str, os.PathLike], expected: str,
                  *, timeout: float = 60.0) -> pathlib.Path:
  """Fetches `url` to `dest` atomically (temporary file, then `os.replace`), refusing a sha256
  mismatch; an existing `dest` with the right checksum is kept.

  Args:
    url: any URL urllib can open (https://, file://).
    dest: the final path; parent folders are created.
    expected: the expected hex sha256.
    timeout: socket timeout in seconds.
  Returns:
    The destination path.
  Raises:
    ChecksumError: the downloaded bytes have another digest (nothing written).
  """
  dest = pathlib.Path(dest)
  expected = expected.lower()
  if dest.is_file() and sha256_file(dest) == expected:
    return dest
  def fetch(tmp):
    digest = hashlib.sha256()
    with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
      for chunk in iter(lambda: response.read(_CHUNK), b""):
        digest.update(chunk)
        out.write(chunk)
    actual = digest.hexdigest()
    if actual != expected:
      raise ChecksumError(
          f"Checksum mismatch for {url}: sha256 is {actual}, expected "
          f"{expected}. Refusing to write {str(dest)!r}.")
  atomic.atomic_save(fetch, str(dest))
  return dest


def download_dataset(dataset: str, data_dir: Union[str, os.PathLike],
                     *, timeout: float = 60.0) -> Sequence[pathlib.Path]:
  """Downloads and verifies every raw file of `dataset` under `data_dir`."""
  if dataset not in DATASET_FILES:
    raise ValueError(f"Unknown dataset {dataset!r} for download; valid: "
                     f"{sorted(DATASET_FILES)}")
  paths = []
  for rel in DATASET_FILES[dataset]:
    raw = RAW_FILES[rel]
    paths.append(download_file(raw.url, pathlib.Path(data_dir) / rel,
                               raw.sha256, timeout=timeout))
  return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command-line entry point (see the module docstring)."""
  parser = argparse.ArgumentParser(
      prog="python -m data_prep.download",
      description="Download and verify raw data files (needs internet).")
  parser.add_argument("--dataset", required=True,
                      choices=sorted(DATASET_FILES))
  parser.add_argument("--data_dir", required=True,
                      help="destination root, e.g. ../shared/data")
  parser.add_argument("--timeout", type=float, default=60.0)
  args = parser.parse_args(argv)
  for path in download_dataset(args.dataset, args.data_dir,
                               timeout=args.timeout):
    print(f"ok  {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())


def checked_raw_files(root, relative_paths, verify_checksums=True):
  """Locates raw files under a data root and hashes them (the cache key).

  Args:
    root: the data root (`paths.resolve_data_dir`).
    relative_paths: files relative to the root, e.g. ("r52/r52-train.txt", ...).
    verify_checksums: compare each sha256 with RAW_FILES' (ChecksumError on
      a mismatch); False only for tests on small fake files.
  Returns:
    (paths, digests): the absolute paths in order, and {relative path: sha256}.
  Raises:
    DataNotFoundError: a file is missing (the message says how to provide it).
  """
  files, digests = [], {}
  for rel in relative_paths:
    path = paths_lib.require_file(root, rel)
    files.append(path)
    digests[rel] = (verify_sha256(path, expected_sha256(rel)) if verify_checksums
                    else sha256_file(path))
  return files, digests

