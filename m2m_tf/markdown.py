"""The one Markdown table writer of the generated results (launch/, benchmarks/, run reports).

pandas' `DataFrame.to_markdown` would need the `tabulate` package, which is not a
dependency; the tables here are plain pipe tables, so a few lines do.
"""

from typing import Iterable, Sequence


def _cell(value) -> str:
  """A cell's text; a literal "|" is escaped so that it cannot split the cell."""
  return str(value).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
  """A pipe table: the header row, a `|---|` rule, then one line per row.

  Args:
    header: the column titles.
    rows: one sequence of cells per row, as many as `header` (cells are
      formatted with `str`; format numbers before).

  Returns:
    The table's lines joined by newlines, without a trailing newline.

  Raises:
    ValueError: a row has another number of cells than the header.
  """
  lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
           "|" + "---|" * len(header)]
  for i, row in enumerate(rows):
    row = list(row)
    if len(row) != len(header):
      raise ValueError(f"markdown_table: row {i} has {len(row)} cells, the header "
                       f"{len(header)}")
    lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
  return "\n".join(lines)
