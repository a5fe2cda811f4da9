"""User errors, which the command line reports in one line (a bug keeps its traceback).

Each class also derives from the built-in exception a caller would expect (ValueError, ...).
"""


# The base class and the two errors data preparation raises live with it (the bottom floor).
from data_prep.errors import ConfigError, DataError, M2mError

__all__ = ["CheckpointError", "ClusterError", "ConfigError", "DataError", "DivergenceError",
           "M2mError", "OutputDirError"]


class OutputDirError(M2mError, FileExistsError):
  """The output folder cannot be used: it holds results, another run, foreign files or is busy."""


class CheckpointError(M2mError, ValueError):
  """A checkpoint is missing, damaged, of an unknown kind, or does not fit the model or data."""


class DivergenceError(M2mError, FloatingPointError):
  """Training diverged: a non-finite loss, or a loss far above that of a uniform guess."""


class ClusterError(M2mError, RuntimeError):
  """A worker of a multi-worker run lost a peer (killed, crashed, unreachable)."""
