"""Writing a benchmark's report (shared by the benchmark commands)."""

from typing import Optional

from data_prep.atomic import atomic_write_json


def emit(report: dict, markdown: str, output: Optional[str]) -> dict:
  """Prints the report's Markdown table, writes its JSON to `output` (atomically) if given,
  and returns the report."""
  print(markdown)
  if output:
    atomic_write_json(output, report)
  return report
