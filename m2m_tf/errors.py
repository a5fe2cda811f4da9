"""User errors: problems with the input a user gave, reported by the command line in one line.

Everything else (a genuine bug) keeps its traceback. Each class also derives
from the built-in exception a caller would expect, so `except ValueError` and
friends keep working.
"""


class M2mError(Exception):
  """Base class of the errors `m2m_tf.main` reports in one line, without a traceback."""


class ConfigError(M2mError, ValueError):
  """A configuration value (flag or `ExperimentConfig` field) is invalid."""


class DataError(M2mError, ValueError):
  """The data could not be used as given (malformed file, unknown label, mismatched shapes)."""


class OutputDirError(M2mError, FileExistsError):
  """The output folder cannot be used: it holds results, another run, foreign files or is busy."""


class CheckpointError(M2mError, ValueError):
  """A checkpoint is missing, damaged, of an unknown kind, or does not fit the model or data."""


class DivergenceError(M2mError, FloatingPointError):
  """Training diverged: a non-finite loss, or a loss far above that of a uniform guess."""


class ClusterError(M2mError, RuntimeError):
  """A worker of a multi-worker run lost a peer (killed, crashed, unreachable)."""
