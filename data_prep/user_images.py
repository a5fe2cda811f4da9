"""Images of user-supplied data: `folder:DIR` sources (DIR/train/<class>/, optional val/ and
test/, or class folders directly under DIR), decoded by TensorFlow and brought to a common size
(`choose_image_size`). See docs/data.md#your-own-data.
"""

import collections
import os
import pathlib
import struct
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np

from data_prep import cache as cache_lib
from data_prep import tfds_images
from data_prep import user_sources
from data_prep.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
# Default sides when sizes differ: the paper's image sizes (CIFAR 32, CelebA-5 via 64,
# ImageNet-LT 128), which the suggested architectures (data_prep.recipes) are made for.
STANDARD_SIDES = (32, 64, 128)
FOLDER_VERSION = "user-folder-v1"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def choose_image_size(sizes: Sequence[Tuple[int, int]], image_size: Optional[int] = None
                      ) -> Optional[int]:
  """The square side every image is resized to, or None to keep them as they are: `image_size`
  if given, None for images of one size, else the largest of 32, 64 and 128 not above the
  median shorter side (at least 32).

  Args:
    sizes: (height, width) of every image.
    image_size: the option, or None.
  """
  if image_size is not None:
    return int(image_size)
  if len(set(sizes)) <= 1:
    return None
  median = float(np.median([min(h, w) for h, w in sizes]))
  return max([s for s in STANDARD_SIDES if s <= median] or [STANDARD_SIDES[0]])


def image_header(path: pathlib.Path, data: bytes) -> Tuple[int, int, int]:
  """(height, width, channels) of a JPEG or PNG file from its header, without decoding.

  Raises:
    DataError: naming the path, for a file that is not a JPEG or PNG or has a broken header.
  """
  if data.startswith(_PNG_SIGNATURE) and len(data) >= 26 and data[12:16] == b"IHDR":
    width, height = struct.unpack(">II", data[16:24])
    channels = _PNG_CHANNELS.get(data[25])
    if channels is not None and width and height:
      return height, width, channels
  elif data.startswith(b"\xff\xd8"):
    import tensorflow as tf  # lazy: TensorFlow loads only when used
    try:
      h, w, c = tf.io.extract_jpeg_shape(data).numpy().tolist()
      return h, w, c
    except (tf.errors.InvalidArgumentError, ValueError):
      pass
  raise DataError(f"{path}: unreadable image (not a valid JPEG or PNG file)")


def decode_image(path: pathlib.Path, channels: int, side: Optional[int]) -> np.ndarray:
  """uint8 [h, w, channels] pixels of one file, resized to side x side when side is set.

  Raises:
    DataError: naming the path, when the file cannot be decoded.
  """
  import tensorflow as tf  # lazy: TensorFlow loads only when used
  try:
    image = tf.io.decode_image(path.read_bytes(), channels=channels, dtype=tf.uint8,
                               expand_animations=False)
  except (tf.errors.InvalidArgumentError, OSError) as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataError(f"{path}: unreadable image ({reason})") from None
  if side is not None and tuple(image.shape[:2]) != (side, side):
    image = tfds_images.center_crop_resize(image, side)
  return image.numpy()


def _visible_dirs(folder: pathlib.Path) -> List[pathlib.Path]:
  return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_class_files(split_dir: pathlib.Path) -> Tuple[List[pathlib.Path], List[str]]:
  """(image paths, class names) of a split folder: one sub-folder per class.

  Raises:
    DataError: no class folders, or a class folder without images.
  """
  classes = _visible_dirs(split_dir)
  if not classes:
    raise DataError(f"{split_dir}: empty folder (expected one sub-folder of .jpg/.png images "
                    "per class)")
  files, labels, skipped = [], [], 0
  for class_dir in classes:
    found = sorted(p for p in class_dir.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(class_dir).parts))
    images = [p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS]
    skipped += len(found) - len(images)
    if not images:
      raise DataError(f"{class_dir}: empty class folder (no .jpg, .jpeg or .png image)")
    files += images
    labels += [class_dir.name] * len(images)
  if skipped:
    logging.warning("%s: skipped %d file(s) that are not .jpg/.jpeg/.png", split_dir, skipped)
  return files, labels


def find_split_folders(root: pathlib.Path) -> Dict[str, pathlib.Path]:
  """split -> folder: DIR/train, DIR/val (or validation), DIR/test; or DIR itself as train."""
  if not (root / "train").is_dir():
    return {"train": root}
  out = {}
  for split, names in SPLIT_FOLDERS.items():
    for name in names:
      if (root / name).is_dir():
        out[split] = root / name
        break
  return out


def _file_stamps(root: pathlib.Path, files: Sequence[pathlib.Path]) -> Dict[str, str]:
  """relative path -> "size:mtime_ns": the cache key's view of the folder's content."""
  out = {}
  for f in files:
    st = f.stat()
    out[os.fspath(f.relative_to(root))] = f"{st.st_size}:{st.st_mtime_ns}"
  return out


def _decode_folder(listing, image_size, channels) -> Dict[str, np.ndarray]:
  """Reads headers, chooses size and channels, decodes every split."""
  headers = {s: [image_header(p, p.read_bytes()) for p in files]
             for s, (files, _) in listing.items()}
  every = [h for hs in headers.values() for h in hs]
  side = choose_image_size([(h, w) for h, w, _ in every], image_size)
  if channels is None:
    channels = 1 if all(c <= 2 for _, _, c in every) else 3
  if side is not None:
    common = collections.Counter((h, w) for h, w, _ in every).most_common(1)[0][0]
    logging.info("images resized to %dx%d (most common size %s)", side, side, common)
  arrays = {}
  for s, (files, labels) in listing.items():
    arrays[f"x_{s}"] = np.stack([decode_image(p, channels, side) for p in files])
    arrays[f"y_{s}"] = np.asarray(labels, dtype=str)
  return arrays


def read_folder(path: str, data_dir=None, *, image_size: Optional[int] = None,
                channels: Optional[int] = None, use_cache: bool = True,
                cache_dir=None) -> user_sources.RawData:
  """Reads a `folder:DIR` source (docs/data.md#your-own-data).

  Args:
    path: DIR.
    data_dir: where a relative DIR is also looked for.
    image_size: resize every image to this square side (see `choose_image_size`).
    channels: 1 or 3; default 1 when every image is grayscale, else 3.
    use_cache, cache_dir: the decoded arrays' cache (`data_prep.cache`), keyed by every file's
      relative path, size and modification time.
  Raises:
    MissingFileError: DIR does not exist.
    DataError: an empty folder, an unreadable image (naming it).
  """
  root = user_sources.resolve_path(path, data_dir, folder=True)
  listing = {s: list_class_files(d) for s, d in find_split_folders(root).items()}
  stamps = _file_stamps(root, [f for files, _ in listing.values() for f in files])
  options = {"image_size": image_size, "channels": channels,
             "splits": sorted(listing), "root": os.fspath(root.resolve())}
  arrays = cache_lib.cached_arrays(
      "user_folder", FOLDER_VERSION, stamps, options,
      lambda: _decode_folder(listing, image_size, channels),
      cache_dir=cache_dir, use_cache=use_cache)
  x = {s: arrays[f"x_{s}"] for s in listing}
  y = {s: arrays[f"y_{s}"] for s in listing}
  where = {s: str(find_split_folders(root)[s]) for s in listing}
  return user_sources.RawData(x, y, where, "image")
