"""The user errors of data preparation, reported by the command line in one line (`m2m_tf.errors`
re-exports them); each also derives from the built-in exception a caller would expect.
"""


class M2mError(Exception):
  """Base class of the errors the project's commands report in one line, without a traceback."""


class ConfigError(M2mError, ValueError):
  """A configuration value (flag, `ExperimentConfig` field or data source spec) is invalid."""


class DataError(M2mError, ValueError):
  """The data could not be used as given (malformed file, unknown label, mismatched shapes)."""
