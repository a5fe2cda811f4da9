"""Readers of user-supplied array files: `npz:` and `csv:` (docs/data.md#your-own-data).

A reader returns a `RawData`: the splits the files hold (training always,
validation and test when given), their raw labels (integers or strings) and,
when the data name them, the class names. `data_prep.user_data` turns it into a
`DatasetSplits` (label encoding, hold-outs, long tail, clip range).
"""

import dataclasses
import os
import pathlib
import zipfile
from typing import Dict, List, Optional, Tuple, Union

from absl import logging
import numpy as np

from data_prep import paths
from data_prep.errors import DataError

PathLike = Union[str, os.PathLike]

NPZ_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "class_names")


class MissingFileError(DataError, paths.DataNotFoundError):
  """A file or folder named by a source does not exist (a DataError and a DataNotFoundError)."""


@dataclasses.dataclass
class RawData:
  """What a reader found, before labels are encoded and splits are made.

  Attributes:
    x: split ("train", and "val" / "test" when the source has them) -> inputs:
      [n, d] numbers (features) or [n, h, w(, c)] images.
    y: split -> raw labels (integers or strings), one per input.
    where: split -> the file (and array) that error messages name.
    input_kind: "features" or "image".
    class_names: the data's own class names (labels then index them), or None.
  """

  x: Dict[str, np.ndarray]
  y: Dict[str, np.ndarray]
  where: Dict[str, str]
  input_kind: str
  class_names: Optional[Tuple[str, ...]] = None


def resolve_path(path: str, data_dir: Optional[PathLike], *, folder: bool = False
                 ) -> pathlib.Path:
  """`path` as given (absolute, or relative to the working directory), else under
  `data_dir` when one is given and holds it.

  Raises:
    MissingFileError: neither exists (naming the path as given).
  """
  if not path:
    raise DataError("the source names no file (expected KIND:PATH)")
  candidates = [pathlib.Path(path).expanduser()]
  if data_dir and not candidates[0].is_absolute():
    candidates.append(pathlib.Path(data_dir).expanduser() / path)
  for cand in candidates:
    if cand.is_dir() if folder else cand.is_file():
      return cand
  what = "folder" if folder else "file"
  where = f" (nor under data_dir {str(data_dir)!r})" if len(candidates) > 1 else ""
  raise MissingFileError(f"{path}: no such {what}{where}")


# ---------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------


def _npz_arrays(path: pathlib.Path) -> Dict[str, np.ndarray]:
  """The known arrays of an .npz file (no pickles), checked for presence."""
  try:
    data = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f"{path}: not a readable .npz file ({e})") from None
  with data:
    files = set(data.files)
    missing = [a for a in ("x_train", "y_train") if a not in files]
    if missing:
      raise DataError(f"{path}: missing required array(s) {missing} (it has "
                      f"{sorted(files)})")
    for split in ("val", "test"):
      if (f"x_{split}" in files) != (f"y_{split}" in files):
        raise DataError(f"{path}: x_{split} and y_{split} must be given together")
    ignored = sorted(files - set(NPZ_ARRAYS))
    if ignored:
      logging.warning("%s: ignoring array(s) %s (known: %s)", path, ignored, list(NPZ_ARRAYS))
    out = {}
    for name in sorted(files & set(NPZ_ARRAYS)):
      try:
        out[name] = data[name]
      except ValueError as e:  # object arrays need pickles, which are refused
        raise DataError(f"{path}: array {name!r} cannot be read without pickles ({e}); save "
                        "labels and class_names as int or str arrays") from None
  return out


def read_npz(path: PathLike, data_dir: Optional[PathLike] = None) -> RawData:
  """Reads `x_train`, `y_train` and optional `x_val`/`y_val`, `x_test`/`y_test`,
  `class_names` from an .npz file.

  2-D inputs are features; 3-D (grayscale, a channel is added later) and 4-D
  (NHWC) inputs are images.

  Raises:
    MissingFileError: the file does not exist.
    DataError: unreadable, a required array missing, inputs of another rank.
  """
  path = resolve_path(os.fspath(path), data_dir)
  arrays = _npz_arrays(path)
  x, y, where = {}, {}, {}
  for split in ("train", "val", "test"):
    if f"x_{split}" in arrays:
      x[split], y[split] = arrays[f"x_{split}"], arrays[f"y_{split}"]
      where[split] = f"{path} (x_{split}/y_{split})"
  ndim = x["train"].ndim
  if ndim not in (2, 3, 4):
    raise DataError(f"{path}: x_train must be [n, d] features or [n, h, w(, c)] images, got "
                    f"shape {x['train'].shape}")
  names = None
  if "class_names" in arrays:
    names = tuple(str(c) for c in np.asarray(arrays["class_names"]).reshape(-1).tolist())
  return RawData(x, y, where, "features" if ndim == 2 else "image", names)


# ---------------------------------------------------------------------------
# csv
# ---------------------------------------------------------------------------


def _is_number(text) -> bool:
  try:
    float(text)
  except (TypeError, ValueError):
    return False
  return True


def _read_table(path: pathlib.Path, header, label_column=None):
  """The CSV as a DataFrame of strings and whether its first line was a header.

  header None infers it: the first line is a header when none of its fields
  is a number (a data row of numeric features always has one) or when one of
  them is the label column's name (pandas writes integer column names).
  """
  import pandas as pd  # lazy: pandas loads only for CSV files
  try:
    table = pd.read_csv(path, header=None, dtype=str, skipinitialspace=True)
  except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: not a readable CSV file ({str(e).splitlines()[0]})") from None
  if header is None:
    first = [str(v).strip() for v in table.iloc[0].tolist()]
    # A header: no numeric field (a data row has numeric features), or the label column's name.
    named = label_column is not None and not str(label_column).lstrip("-").isdigit()
    header = not any(_is_number(v) for v in first) or (named and str(label_column) in first)
  if header:
    columns = [str(c).strip() for c in table.iloc[0].tolist()]
    table = table.iloc[1:].reset_index(drop=True)
    table.columns = columns
  else:
    table.columns = [str(i) for i in range(table.shape[1])]
  if len(table) == 0:
    raise DataError(f"{path}: no data rows")
  return table, bool(header)


def _label_index(columns: List[str], label_column, path) -> int:
  """The label column's position: a name, else an index (negative from the end)."""
  if label_column is None:
    return len(columns) - 1
  text = str(label_column)
  if text in columns:
    return columns.index(text)
  if text.lstrip("-").isdigit() and -len(columns) <= int(text) < len(columns):
    return int(text) % len(columns)
  raise DataError(f"{path}: no label column {label_column!r} (columns: {columns[:20]})")


def _csv_split(path: pathlib.Path, label_column, header) -> Tuple[np.ndarray, np.ndarray,
                                                                   List[str]]:
  """(features float64 [n, d], labels, column names) of one CSV file."""
  import pandas as pd  # lazy: pandas loads only for CSV files
  table, has_header = _read_table(path, header, label_column)
  columns = list(table.columns)
  if len(columns) < 2:
    raise DataError(f"{path}: needs at least one feature column and a label column")
  label_at = _label_index(columns, label_column, path)
  labels = table.iloc[:, label_at]
  if labels.isna().any():
    row = int(np.flatnonzero(labels.isna().to_numpy())[0])
    raise DataError(f"{path}: empty label on line {row + 1 + has_header}")
  labels = labels.str.strip().to_numpy(dtype=str)
  if all(_is_number(v) for v in labels):
    labels = labels.astype(np.float64)  # integers or a fractional-label error later
  features = table.drop(columns=columns[label_at])
  numeric = features.apply(pd.to_numeric, errors="coerce")
  bad = numeric.isna() & features.notna()
  if bad.any(axis=None):
    row, col = np.argwhere(bad.to_numpy())[0]
    raise DataError(f"{path}: column {features.columns[col]!r} is not numeric (line "
                    f"{row + 1 + has_header}: {features.iat[row, col]!r})")
  nan = ~np.isfinite(numeric.to_numpy(np.float64))
  if nan.any():
    row, col = np.argwhere(nan)[0]
    raise DataError(f"{path}: {int(nan.sum())} missing, NaN or Inf feature value(s), first "
                    f"in column {features.columns[col]!r} on line {row + 1 + has_header}")
  return numeric.to_numpy(np.float64), labels, columns


def read_csv(paths_: List[str], data_dir: Optional[PathLike] = None, *, label_column=None,
             header: Optional[bool] = None) -> RawData:
  """Reads one to three CSV files: train, or train and test, or train, validation and test.

  Every column but the label column is a numeric feature.

  Args:
    paths_: the file names (`csv:train.csv,test.csv` gives two).
    data_dir: where relative names are also looked for.
    label_column: the label column's name or index (negative: from the end);
      default the last column.
    header: whether the first line names the columns; None infers it (a
      header has no numeric field, or holds the label column's name).

  Raises:
    MissingFileError, DataError: naming the file and the problem.
  """
  if not 1 <= len(paths_) <= 3:
    raise DataError(f"csv: give 1 to 3 files (train[,test] or train,val,test), got {paths_}")
  split_names = {1: ("train",), 2: ("train", "test"), 3: ("train", "val", "test")}[len(paths_)]
  x, y, where, columns = {}, {}, {}, {}
  for split, name in zip(split_names, paths_):
    path = resolve_path(name, data_dir)
    x[split], y[split], columns[split] = _csv_split(path, label_column, header)
    where[split] = str(path)
  for split in split_names[1:]:
    if columns[split] != columns["train"]:
      raise DataError(f"{where[split]}: columns {columns[split][:10]} differ from the "
                      f"training file's {columns['train'][:10]}")
  return RawData(x, y, where, "features")
