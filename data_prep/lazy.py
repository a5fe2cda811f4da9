"""Lazy package exports (PEP 562): a package's names imported on first use."""

import importlib
from typing import Callable, Dict, List, Tuple


def exports(package: str, names: Dict[str, str],
            module_globals: dict) -> Tuple[Callable[[str], object], Callable[[], List[str]]]:
  """The `__getattr__` and `__dir__` of `package`, whose `names` (name -> module) are imported on
  first use; `module_globals` is the package's `globals()`."""

  def getattr_(name: str):
    if name in names:
      return getattr(importlib.import_module(names[name]), name)
    raise AttributeError(f"module {package!r} has no attribute {name!r}")

  def dir_() -> List[str]:
    return sorted(list(module_globals) + list(names))

  return getattr_, dir_
