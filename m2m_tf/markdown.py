"""The one Markdown table writer of the generated results (launch/, benchmarks/, run reports).

Plain pipe tables: pandas' `DataFrame.to_markdown` needs `tabulate`, which is not a dependency.
"""

from typing import Iterable, Sequence


def _cell(value) -> str:
  """A cell's text; a literal "|" is escaped so that it cannot split the cell."""
  return str(value).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
  """A pipe table (no trailing newline): header, `|---|` rule, one line per row of `str` cells.

  Raises ValueError when a row has another number of cells than the header.
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
