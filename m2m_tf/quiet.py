"""TensorFlow imported without its C++ start-up lines on stderr (docs/runs.md#quiet-start-up)."""

import contextlib
import os
import sys
import tempfile

# Lines TensorFlow's C++ logging prints while it loads, before absl's logging is initialised
# (so TF_CPP_MIN_LOG_LEVEL does not reach them). Any other line written meanwhile is kept.
START_UP_LINES = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",
)


def is_start_up_line(line: str) -> bool:
  """True for one of TensorFlow's known start-up lines."""
  return any(s in line for s in START_UP_LINES)


@contextlib.contextmanager
def held_stderr(drop=is_start_up_line):
  """Captures file descriptor 2 (C++ and Python writes alike) for the block, then writes back
  every captured line for which `drop(line)` is false, in order."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      kept = [line for line in held.read().decode("utf-8", "replace").splitlines(True)
              if not drop(line)]
      sys.stderr.write("".join(kept))
      sys.stderr.flush()


def import_tensorflow(verbose: bool = False):
  """Imports TensorFlow and returns it; unless `verbose`, its start-up lines are dropped.

  Call it before any module that imports TensorFlow; once TensorFlow is loaded it does nothing
  more than return the module.
  """
  if verbose or "tensorflow" in sys.modules:
    import tensorflow  # Imported here: this function's whole purpose is to wrap the import.
    return tensorflow
  with held_stderr():
    import tensorflow  # Imported here: this function's whole purpose is to wrap the import.
  return tensorflow
