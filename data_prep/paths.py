"""Where the raw data files live, and a clear error when they are missing."""

import os
import pathlib
from typing import Optional, Union

DATA_DIR_ENV = "M2M_DATA_DIR"

# The package directory's parent is the repository root.
_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
_DEFAULT_RELATIVE = pathlib.Path("..") / "shared" / "data"

_HOW_TO_PROVIDE = (
    "Provide the raw data in one of these ways: pass --data_dir DIR (the "
    "`data_dir` argument), set the environment variable $" + DATA_DIR_ENV +
    "=DIR, or place it at ../shared/data next to the repository. To fetch it "
    "on a machine with internet access, run "
    "`python -m data_prep.download --dataset reuters --data_dir DIR` "
    "(or --dataset twitter) and copy DIR here.")


class DataNotFoundError(FileNotFoundError):
  """The data directory or a required raw file is missing."""


def resolve_data_dir(data_dir: Optional[Union[str, os.PathLike]] = None
                    ) -> pathlib.Path:
  """Finds the root folder of the raw data files: `data_dir`, else $M2M_DATA_DIR, else
  `../shared/data` beside the repository or the working directory, else `shared/data` inside
  the repository (docs/data.md#where-the-files-live).

  Args:
    data_dir: an explicit directory, or None / "" to search.
  Returns:
    The absolute path of an existing directory.
  Raises:
    DataNotFoundError: nothing found, or an explicit argument or environment value that does not
      exist; the message says how to provide it.
  """
  if data_dir:
    path = pathlib.Path(data_dir).expanduser()
    if not path.is_dir():
      raise DataNotFoundError(
          f"data_dir {str(path)!r} (from the data_dir argument / --data_dir) "
          f"is not a directory. {_HOW_TO_PROVIDE}")
    return path.resolve()
  env = os.environ.get(DATA_DIR_ENV)
  if env:
    path = pathlib.Path(env).expanduser()
    if not path.is_dir():
      raise DataNotFoundError(
          f"${DATA_DIR_ENV}={env!r} is not a directory. {_HOW_TO_PROVIDE}")
    return path.resolve()
  candidates = [_REPO_ROOT / _DEFAULT_RELATIVE,
                pathlib.Path.cwd() / _DEFAULT_RELATIVE,
                _REPO_ROOT / "shared" / "data"]
  for path in candidates:
    if path.is_dir():
      return path.resolve()
  tried = ", ".join(str(p) for p in candidates)
  raise DataNotFoundError(
      f"No data directory given and none found (tried {tried}). "
      f"{_HOW_TO_PROVIDE}")


def require_file(root: Union[str, os.PathLike],
                 relative_path: Union[str, os.PathLike]) -> pathlib.Path:
  """Returns `root / relative_path`, raising if it is not an existing file.

  Args:
    root: the data root (usually from `resolve_data_dir`).
    relative_path: the file's path under the root, e.g. "r52/r52-train.txt".
  Raises:
    DataNotFoundError: naming the expected full path and how to provide it.
  """
  path = pathlib.Path(root) / relative_path
  if not path.is_file():
    raise DataNotFoundError(
        f"Required data file {str(path)!r} is missing (expected "
        f"{str(relative_path)!r} under the data directory {str(root)!r}). "
        f"{_HOW_TO_PROVIDE}")
  return path
