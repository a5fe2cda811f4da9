"""Writing a benchmark's report (shared by the benchmark commands)."""

from typing import Optional


def emit(report: dict, markdown: str, output: Optional[str]) -> dict:
  """Prints the report's Markdown table, writes its JSON to `output` (atomically) if given,
  and returns the report."""
  print(markdown)
  if output:
    from m2m_tf.io_utils import atomic_write_json  # pylint: disable=g-import-not-at-top
    atomic_write_json(output, report)
  return report
