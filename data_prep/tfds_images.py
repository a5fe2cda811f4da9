"""The paper's image datasets from TFDS: CIFAR-LT-10/100, CelebA-5, SUN397, ImageNet-LT, as
uint8 `DatasetSplits`, and the pure NumPy rules that select them. Nothing is downloaded unless
asked. See docs/data.md#image-datasets-from-tensorflow-datasets.
"""

import argparse
import os
import pathlib
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from data_prep import paths
from data_prep import splits

PathLike = Union[str, os.PathLike]

CIFAR_N_MAX = {"cifar10": 5000, "cifar100": 500}
VAL_FRACTION = 0.1
CELEBA_CLASSES = ("Gray_Hair", "Black_Hair", "Blond_Hair", "Brown_Hair", "Bald")
CELEBA_SUBSAMPLE = 20
CELEBA_VAL_PER_CLASS = 50
CELEBA_TEST_PER_CLASS = 100
SUN397_HOLDOUT = 50
SUN397_VAL = 5
IMAGENET_LT_LISTS = ("ImageNet_LT_train.txt", "ImageNet_LT_val.txt",
                     "ImageNet_LT_test.txt")

_PREPARE_HINT = {
    "cifar10": "downloads automatically",
    "cifar100": "downloads automatically",
    "celeb_a": "downloads automatically from Google Drive (often "
               "rate-limited; retry, or place the files in the TFDS manual "
               "dir)",
    "sun397/tfds": "downloads automatically (37 GB)",
    "imagenet2012": "MANUAL download: put ILSVRC2012_img_train.tar and "
                    "ILSVRC2012_img_val.tar from https://image-net.org in "
                    "<tfds_data_dir>/downloads/manual/ first",
}


# ---------------------------------------------------------------------------
# Pure NumPy long-tail and split rules.
# ---------------------------------------------------------------------------


def sun397_split(labels, num_classes: int, order_key=None, *,
                 holdout: int = SUN397_HOLDOUT, n_val: int = SUN397_VAL
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """SUN397's long tail: per class the first `holdout` examples (by `order_key`) are held out
  (the first `n_val` of them validation, the rest test), the others train.

  Returns:
    (train, val, test) indices, class by class.
  Raises:
    ValueError: a class has no more than `holdout` examples.
  """
  if not 0 <= n_val <= holdout:
    raise ValueError(f"need 0 <= n_val <= holdout, got {n_val}, {holdout}")
  labels = splits.check_labels(labels, num_classes, "sun397_split")
  train, val, test = [], [], []
  for k in range(num_classes):
    members = splits.class_members(labels, order_key, k)
    if len(members) <= holdout:
      raise ValueError(f"sun397_split: class {k} has {len(members)} images, "
                       f"needs more than holdout={holdout}")
    val.append(members[:n_val])
    test.append(members[n_val:holdout])
    train.append(members[holdout:])
  return tuple(np.concatenate(a).astype(np.int64) for a in (train, val, test))


def celeba5_labels(attributes: Dict[str, np.ndarray],
                   classes: Sequence[str] = CELEBA_CLASSES) -> np.ndarray:
  """Hair-colour class of each image: k when exactly attribute classes[k] of
  the five is set, -1 otherwise (none, or ambiguous)."""
  missing = [c for c in classes if c not in attributes]
  if missing:
    raise ValueError(f"celeba5_labels: attributes {missing} are missing")
  flags = np.stack([np.asarray(attributes[c], bool) for c in classes], axis=1)
  return np.where(flags.sum(axis=1) == 1, flags.argmax(axis=1),
                  -1).astype(np.int64)


def celeba5_train_counts(labels, num_classes: int = len(CELEBA_CLASSES),
                         subsample: int = CELEBA_SUBSAMPLE) -> np.ndarray:
  """floor(n_k / subsample) per class (n_k: eligible images of class k)."""
  labels = np.asarray(labels, np.int64)
  n = np.bincount(labels[labels >= 0], minlength=num_classes)
  return (n // subsample).astype(np.int64)


def read_split_list(path: PathLike) -> Tuple[List[str], np.ndarray]:
  """Reads an ImageNet-LT list (`train/n01440764/n01440764_190.JPEG 0`).

  Returns:
    (base file names, int64 labels).
  Raises:
    DataNotFoundError: the file is missing.
    ValueError: a malformed line, naming the file and line number.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise paths.DataNotFoundError(
        f"ImageNet-LT split list {str(path)!r} is missing. Get "
        "ImageNet_LT_{train,val,test}.txt from the OLTR release "
        "(https://github.com/zhmiao/OpenLongTailRecognition-OLTR) and pass "
        "their folder as imagenet_lt_dir (or put them in "
        "<data_dir>/imagenet_lt/).")
  names, labels = [], []
  with open(path, encoding="utf-8") as fh:
    for line_no, line in enumerate(fh, 1):
      if not line.strip():
        continue
      parts = line.split()
      if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
        raise ValueError(f"{path}:{line_no}: expected '<path> <label>', got "
                         f"{line.rstrip()!r}")
      names.append(os.path.basename(parts[0]))
      labels.append(int(parts[1]))
  return names, np.asarray(labels, np.int64)


# ---------------------------------------------------------------------------
# Image resizing (TensorFlow ops, used inside tf.data maps).
# ---------------------------------------------------------------------------


def center_crop_resize(image, size: int):
  """Centre square crop (side = the shorter side), then an antialiased
  bilinear resize to size x size; uint8 out."""
  import tensorflow as tf  # lazy: TensorFlow loads only when used
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  side = tf.minimum(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  image = image[top:top + side, left:left + side, :]
  image = tf.image.resize(tf.cast(image, tf.float32), [size, size],
                          method="bilinear", antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def shorter_side_center_crop(image, size: int):
  """Resize the shorter side to `size` (antialiased), then centre crop
  size x size (the usual ImageNet evaluation crop, at 128 px); uint8 out."""
  import tensorflow as tf  # lazy: TensorFlow loads only when used
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = size / tf.reduce_min(shape)
  new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)
  image = tf.image.resize(tf.cast(image, tf.float32), new, method="bilinear",
                          antialias=True)
  top, left = (new[0] - size) // 2, (new[1] - size) // 2
  image = image[top:top + size, left:left + size, :]
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


# ---------------------------------------------------------------------------
# TFDS access.
# ---------------------------------------------------------------------------


def tfds_dir_candidates(data_dir: Optional[PathLike] = None,
                        tfds_data_dir: Optional[PathLike] = None
                        ) -> List[Optional[str]]:
  """The TFDS data dirs to try, in order (None: TFDS's own default)."""
  out: List[Optional[str]] = []
  if tfds_data_dir:
    return [os.fspath(tfds_data_dir)]
  root = None
  try:
    root = paths.resolve_data_dir(data_dir)
  except paths.DataNotFoundError:
    if data_dir:
      raise
  if root is not None:
    for cand in (root / "tensorflow_datasets", root):
      if cand.is_dir():
        out.append(str(cand))
  out.append(None)
  return out


def _not_found_message(name: str, tried: Sequence[Optional[str]]) -> str:
  where = ", ".join(t or "$TFDS_DATA_DIR or ~/tensorflow_datasets"
                    for t in tried)
  return (
      f"TFDS dataset {name!r} is not prepared in any of: {where}. With "
      f"internet, prepare it once: `python -m data_prep.tfds_images "
      f"--prepare {name} --tfds_data_dir DIR` ({_PREPARE_HINT.get(name, '')}"
      f"), or pass download=True. Offline, copy a prepared TFDS folder "
      f"(DIR/{name.split('/')[0]}/<version>/...) and point --data_dir at "
      f"DIR (or at its parent holding DIR/tensorflow_datasets).")


def load_tfds_split(name: str, split: str, data_dir: Optional[PathLike] = None,
                    *, tfds_data_dir: Optional[PathLike] = None,
                    download: bool = False, skip_decoding: bool = False):
  """Returns (tf.data.Dataset of feature dicts in stored order, builder) from the first of
  `tfds_dir_candidates` that has it (download=True prepares the first; network).
  `skip_decoding` leaves images as JPEG bytes.

  Raises:
    DataNotFoundError: not prepared anywhere (the message says how).
  """
  import tensorflow_datasets as tfds  # lazy: TFDS loads only when used
  tried = tfds_dir_candidates(data_dir, tfds_data_dir)
  decoders = {"image": tfds.decode.SkipDecoding()} if skip_decoding else None
  for cand in tried:
    builder = tfds.builder(name, data_dir=cand)
    if download and cand is tried[0]:
      builder.download_and_prepare()
    try:
      ds = builder.as_dataset(split=split, shuffle_files=False,
                              decoders=decoders)
    except AssertionError:  # "could not find data in ..."
      continue
    return ds, builder
  raise paths.DataNotFoundError(_not_found_message(name, tried))


def _collect(ds, keys: Iterable[str], batch: int = 1024
             ) -> Dict[str, np.ndarray]:
  """Materialises a dataset of dicts into NumPy arrays per key (nested
  dicts are flattened as "outer/inner")."""
  keys = list(keys)
  parts = {k: [] for k in keys}

  def get(ex, key):
    for p in key.split("/"):
      ex = ex[p]
    return ex

  for ex in ds.batch(batch).as_numpy_iterator():
    for k in keys:
      parts[k].append(np.asarray(get(ex, k)))
  return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in
          parts.items()}


def _decode_map(ds, transform, keep_keys=("label",)):
  """Decodes (when bytes) and transforms the image of every example."""
  import tensorflow as tf  # lazy: TensorFlow loads only when used

  def fn(ex):
    img = ex["image"]
    if img.dtype == tf.string:
      img = tf.io.decode_image(img, channels=3, expand_animations=False)
    out = {k: ex[k] for k in keep_keys}
    out["image"] = transform(img)
    return out

  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _finish(name, class_names, x_train, y_train, x_val, y_val, x_test, y_test,
            label="") -> splits.DatasetSplits:
  return splits.DatasetSplits(
      name=name, x_train=x_train, y_train=y_train.astype(np.int64),
      x_val=x_val, y_val=y_val.astype(np.int64), x_test=x_test,
      y_test=y_test.astype(np.int64), class_names=tuple(class_names),
      input_kind="image", clip_range=(0.0, 1.0), label=label)


# ---------------------------------------------------------------------------
# Builders.
# ---------------------------------------------------------------------------


def _original_order(ids: np.ndarray) -> np.ndarray:
  """Sort keys from TFDS CIFAR ids ("train_00042" -> 42; else the string)."""
  texts = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
  nums = [t.rsplit("_", 1)[-1] for t in texts]
  if all(n.isdigit() for n in nums):
    return np.asarray([int(n) for n in nums], np.int64)
  return np.asarray(texts)


def build_cifar_lt(source: str, data_dir: Optional[PathLike] = None, *,
                   imbalance_ratio: float = 100, n_max: Optional[int] = None,
                   val_fraction: float = VAL_FRACTION,
                   tfds_data_dir: Optional[PathLike] = None,
                   download: bool = False) -> splits.DatasetSplits:
  """CIFAR-10-LT or CIFAR-100-LT from TFDS
  (docs/data.md#image-datasets-from-tensorflow-datasets).

  Args:
    source: "cifar10" or "cifar100".
    data_dir: data root (see `tfds_dir_candidates`).
    imbalance_ratio: N_max / N_min (100 or 10 in the paper).
    n_max: images of the largest class (default 5000 / 500).
    val_fraction: validation share of each test class.
    tfds_data_dir: an explicit TFDS data dir.
    download: let TFDS download and prepare (network).
  """
  if source not in CIFAR_N_MAX:
    raise ValueError(f"source must be cifar10 or cifar100, got {source!r}")
  train_ds, builder = load_tfds_split(source, "train", data_dir,
                                      tfds_data_dir=tfds_data_dir,
                                      download=download)
  test_ds, _ = load_tfds_split(source, "test", data_dir,
                               tfds_data_dir=tfds_data_dir)
  class_names = builder.info.features["label"].names
  num_classes = len(class_names)
  train = _collect(train_ds, ("image", "label", "id"))
  test = _collect(test_ds, ("image", "label", "id"))
  counts = splits.long_tail_counts(n_max or CIFAR_N_MAX[source],
                                   num_classes, imbalance_ratio)
  tr = splits.first_per_class(train["label"], counts,
                              _original_order(train["id"]))
  va, te = splits.split_eval_per_class(test["label"], num_classes,
                                       val_fraction=val_fraction,
                                       order_key=_original_order(test["id"]))
  return _finish(f"{source}_lt", class_names,
                 train["image"][tr], train["label"][tr],
                 test["image"][va], test["label"][va],
                 test["image"][te], test["label"][te])


def build_cifar10_lt(data_dir: Optional[PathLike] = None, *,
                     imbalance_ratio: float = 100, n_max: Optional[int] = None,
                     val_fraction: float = VAL_FRACTION,
                     tfds_data_dir: Optional[PathLike] = None,
                     download: bool = False) -> splits.DatasetSplits:
  """CIFAR-10-LT (TFDS cifar10); options of `build_cifar_lt`."""
  return build_cifar_lt("cifar10", data_dir, imbalance_ratio=imbalance_ratio,
                        n_max=n_max, val_fraction=val_fraction,
                        tfds_data_dir=tfds_data_dir, download=download)


def build_cifar100_lt(data_dir: Optional[PathLike] = None, *,
                      imbalance_ratio: float = 100, n_max: Optional[int] = None,
                      val_fraction: float = VAL_FRACTION,
                      tfds_data_dir: Optional[PathLike] = None,
                      download: bool = False) -> splits.DatasetSplits:
  """CIFAR-100-LT (TFDS cifar100); options of `build_cifar_lt`."""
  return build_cifar_lt("cifar100", data_dir, imbalance_ratio=imbalance_ratio,
                        n_max=n_max, val_fraction=val_fraction,
                        tfds_data_dir=tfds_data_dir, download=download)


def _celeba_transform(image):
  """178x218 aligned face -> centre 178 square -> 64 px -> 32 px."""
  return center_crop_resize(center_crop_resize(image, 64), 32)


def build_celeba5(data_dir: Optional[PathLike] = None, *,
                  subsample: int = CELEBA_SUBSAMPLE,
                  val_per_class: int = CELEBA_VAL_PER_CLASS,
                  test_per_class: int = CELEBA_TEST_PER_CLASS,
                  image_size: int = 32,
                  tfds_data_dir: Optional[PathLike] = None,
                  download: bool = False) -> splits.DatasetSplits:
  """CelebA-5: five hair colours from TFDS `celeb_a`
  (docs/data.md#image-datasets-from-tensorflow-datasets).

  Args:
    subsample: train keeps floor(n_k / subsample) images per class.
    val_per_class, test_per_class: balanced validation / test sizes.
    image_size: final side (32 in the paper, via 64 px).
  """
  import tensorflow as tf  # lazy: TensorFlow loads only when used
  keys = ["attributes/" + c for c in CELEBA_CLASSES]

  def transform(img):
    if image_size == 32:
      return _celeba_transform(img)
    return center_crop_resize(img, image_size)

  def part(split, per_class=None):
    ds, _ = load_tfds_split("celeb_a", split, data_dir,
                            tfds_data_dir=tfds_data_dir,
                            download=download and split == "train",
                            skip_decoding=True)
    meta = _collect(ds.map(lambda e: {"attributes": e["attributes"]}), keys)
    labels = celeba5_labels({k.split("/")[1]: v for k, v in meta.items()})
    counts = np.full(len(CELEBA_CLASSES), per_class) if per_class else \
        celeba5_train_counts(labels, subsample=subsample)
    idx = splits.first_per_class(
        np.where(labels < 0, len(CELEBA_CLASSES), labels), list(counts) + [0])
    keep = np.zeros(len(labels), bool)
    keep[idx] = True
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(keep)))
    ds = ds.filter(lambda e, k: k).map(lambda e, k: e)
    images = _collect(_decode_map(ds, transform, keep_keys=()), ["image"])
    # The filtered stream is in stored order (sorted idx); put it back in
    # the class-by-class order of `idx`.
    sel = np.searchsorted(np.sort(idx), idx)
    return images["image"][sel], labels[idx]

  x_train, y_train = part("train")
  x_val, y_val = part("validation", per_class=val_per_class)
  x_test, y_test = part("test", per_class=test_per_class)
  return _finish("celeba5", CELEBA_CLASSES, x_train, y_train, x_val, y_val,
                 x_test, y_test)


def build_sun397(data_dir: Optional[PathLike] = None, *,
                 holdout: int = SUN397_HOLDOUT, n_val: int = SUN397_VAL,
                 image_size: int = 32, config: str = "tfds",
                 tfds_data_dir: Optional[PathLike] = None,
                 download: bool = False) -> splits.DatasetSplits:
  """SUN397 with its natural long tail from TFDS `sun397/<config>` (`sun397_split`; 32 px)."""
  name = f"sun397/{config}"
  ds, builder = load_tfds_split(name, "train+validation+test", data_dir,
                                tfds_data_dir=tfds_data_dir,
                                download=download)
  class_names = builder.info.features["label"].names
  data = _collect(_decode_map(
      ds, lambda im: center_crop_resize(im, image_size),
      keep_keys=("label", "file_name")), ("image", "label", "file_name"))
  tr, va, te = sun397_split(data["label"], len(class_names),
                            data["file_name"], holdout=holdout, n_val=n_val)
  x, y = data["image"], data["label"]
  return _finish("sun397", class_names, x[tr], y[tr], x[va], y[va], x[te],
                 y[te])


def _lookup_images(ds, wanted: Dict[str, int], image_size: int
                   ) -> Tuple[np.ndarray, np.ndarray]:
  """Decodes only examples whose base file name is in `wanted` (name ->
  output row); returns (images [len(wanted), s, s, 3], found mask)."""
  import tensorflow as tf  # lazy: TensorFlow loads only when used
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          tf.constant(list(wanted), tf.string),
          tf.constant(list(wanted.values()), tf.int64)), default_value=-1)

  def with_row(ex):
    base = tf.strings.split(ex["file_name"], "/")[-1]
    return {"image": ex["image"], "row": table.lookup(base)}

  ds = ds.map(with_row).filter(lambda e: e["row"] >= 0)
  ds = _decode_map(ds, lambda im: shorter_side_center_crop(im, image_size),
                   keep_keys=("row",))
  out = np.zeros((len(wanted), image_size, image_size, 3), np.uint8)
  found = np.zeros(len(wanted), bool)
  for ex in ds.batch(256).as_numpy_iterator():
    out[ex["row"]] = ex["image"]
    found[ex["row"]] = True
  return out, found


def build_imagenet_lt(data_dir: Optional[PathLike] = None, *,
                      imagenet_lt_dir: Optional[PathLike] = None,
                      image_size: int = 128,
                      tfds_data_dir: Optional[PathLike] = None,
                      download: bool = False) -> splits.DatasetSplits:
  """ImageNet-LT from TFDS `imagenet2012` and the public split lists
  (docs/data.md#image-datasets-from-tensorflow-datasets).

  Args:
    imagenet_lt_dir: folder with ImageNet_LT_{train,val,test}.txt (default
      <data_dir>/imagenet_lt).
    image_size: output side (128 in the paper).

  Raises:
    DataNotFoundError: lists or prepared TFDS data missing.
    ValueError: a listed image is absent from TFDS.
  """
  if imagenet_lt_dir is None:
    imagenet_lt_dir = paths.resolve_data_dir(data_dir) / "imagenet_lt"
  lists = [read_split_list(pathlib.Path(imagenet_lt_dir) / f)
           for f in IMAGENET_LT_LISTS]
  train_ds, builder = load_tfds_split("imagenet2012", "train", data_dir,
                                      tfds_data_dir=tfds_data_dir,
                                      download=download, skip_decoding=True)
  val_ds, _ = load_tfds_split("imagenet2012", "validation", data_dir,
                              tfds_data_dir=tfds_data_dir, skip_decoding=True)
  (tr_names, tr_y), (va_names, va_y), (te_names, te_y) = lists
  # ImageNet-LT val images come from the ImageNet train set.
  from_train = {n: i for i, n in enumerate(tr_names + va_names)}
  if len(from_train) != len(tr_names) + len(va_names):
    raise ValueError("ImageNet-LT train and val lists share file names")
  x_trval, found = _lookup_images(train_ds, from_train, image_size)
  x_test, found_test = _lookup_images(val_ds, {n: i for i, n in
                                               enumerate(te_names)},
                                      image_size)
  missing = (~found).sum() + (~found_test).sum()
  if missing:
    raise ValueError(f"{missing} images of the ImageNet-LT lists in "
                     f"{imagenet_lt_dir} are not in TFDS imagenet2012")
  n_tr = len(tr_names)
  class_names = builder.info.features["label"].names
  return _finish("imagenet_lt", class_names, x_trval[:n_tr], tr_y,
                 x_trval[n_tr:], va_y, x_test, te_y)


_TFDS_NAMES = {"cifar10_lt": "cifar10", "cifar100_lt": "cifar100",
               "celeba5": "celeb_a", "sun397": "sun397/tfds",
               "imagenet_lt": "imagenet2012"}


def main(argv=None) -> int:
  """`python -m data_prep.tfds_images --prepare cifar10_lt --tfds_data_dir
  DIR`: downloads and prepares the TFDS source of a dataset (network)."""
  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument("--prepare", required=True,
                      choices=sorted(_TFDS_NAMES) + sorted(
                          set(_TFDS_NAMES.values())))
  parser.add_argument("--tfds_data_dir", default=None)
  args = parser.parse_args(argv)
  import tensorflow_datasets as tfds  # lazy: TFDS loads only when used
  name = _TFDS_NAMES.get(args.prepare, args.prepare)
  builder = tfds.builder(name, data_dir=args.tfds_data_dir)
  builder.download_and_prepare()
  print(f"prepared {name} in {builder.data_dir}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
