"""Paired verdicts over seeds: each M2m row against its baselines, a Student-t interval of the
per-seed differences, and the word it earns (`launch.tables` writes them under each table).
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd
from scipy import stats

from m2m_tf.markdown import markdown_table


def t_interval(values: Sequence[float], level: float = 0.95) -> Tuple[float, float, float]:
  """(mean, low, high): the Student-t confidence interval of the mean of `values`.

  mean ± t_{(1+level)/2, n-1} · s / sqrt(n), s the sample standard deviation;
  low = high = nan for fewer than 2 values (no spread to estimate).
  """
  x = np.asarray(values, np.float64)
  mean = float(x.mean()) if x.size else float("nan")
  if x.size < 2:
    return mean, float("nan"), float("nan")
  half = stats.t.ppf((1 + level) / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
  return mean, mean - half, mean + half


# Each M2m row of Table 2 and the rows of its loss family it is compared with (the verdict).
VERDICT_FAMILIES = {
    "m2m": ("erm", "rs", "smote", "rw", "cb_rw", "drs"),
    "ldam_m2m": ("ldam", "ldam_drw"),
}


# The logit-adjustment family, and the M2m rows a Table-2 grid compares with its best row.
LA_FAMILY = ("la", "balanced_softmax", "erm_posthoc_la")
LA_VERDICT_ROWS = ("m2m", "ldam_m2m", "la_m2m")


def la_verdict_families(rows: Sequence[str]) -> Dict[str, Sequence[str]]:
  """Each M2m row of `rows` (LA_VERDICT_ROWS) and the logit-adjustment family's rows in `rows`
  it is compared with; empty when `rows` has none of that family."""
  family = tuple(r for r in LA_FAMILY if r in rows)
  return {m: family for m in LA_VERDICT_ROWS if m in rows} if family else {}


def verdict_families(rows: Sequence[str]) -> Dict[str, Sequence[str]]:
  """Each M2m row of a table and the rows it is compared with: Table 2's families, and for
  rows named `<Table-2 row><suffix>` (the vocabulary and substitute tables) the same family
  among the rows with that suffix."""
  out = {}
  for row in rows:
    for m2m, others in VERDICT_FAMILIES.items():
      if row == m2m or row.startswith(m2m + "_"):  # "ldam_m2m_v2000" does not start with "m2m_"
        suffix = row[len(m2m):]
        family = tuple(o + suffix for o in others if o + suffix in rows)
        if family:
          out[row] = family
  return out


def verdict_word(low: float, high: float) -> str:
  """"holds" when an interval of a difference (M2m's, in the verdicts) lies above 0, "fails"
  below 0, else "unresolved" (it contains 0, or is NaN)."""
  return "holds" if low > 0 else "fails" if high < 0 else "unresolved"


def verdicts(df: pd.DataFrame, metric: str = "test_bacc",
             families: Dict[str, Sequence[str]] = VERDICT_FAMILIES) -> List[dict]:
  """Each M2m row minus the best other row of its loss family, paired by seed.

  The competitor is the family's row with the highest mean `metric` (the
  strongest one: a test-set choice, which can only make M2m's case harder).
  The interval is the t-interval of the per-seed differences over the seeds
  both rows have. Returns one dict per M2m row with runs: row, against,
  seeds, diff, low, high and verdict ("holds": the interval lies above 0,
  "fails": below 0, "unresolved": it contains 0 or has < 2 seeds).
  """
  out = []
  for row, others in families.items():
    mine = df[df["row"] == row].set_index("seed")[metric]
    means = {o: df[df["row"] == o][metric].mean() for o in others if (df["row"] == o).any()}
    if mine.empty or not means:
      continue
    best = max(means, key=means.get)
    theirs = df[df["row"] == best].set_index("seed")[metric]
    seeds = sorted(set(mine.index) & set(theirs.index))
    diff, low, high = t_interval([mine[s] - theirs[s] for s in seeds])
    out.append({"row": row, "against": best, "seeds": len(seeds), "diff": diff, "low": low,
                "high": high, "verdict": verdict_word(low, high)})
  return out


def _verdict_lines(found: Sequence[dict], rows: Dict[str, tuple], against: str,
                   claim: Dict[str, str]) -> List[str]:
  """A verdict table (column `against` names the competitor) and one sentence per M2m row."""
  label = lambda k: rows[k][0] if k in rows else k
  body = [[label(v["row"]), label(v["against"]), v["seeds"], f"{v['diff']:+.1f}",
           f"[{v['low']:+.1f}, {v['high']:+.1f}]", v["verdict"]] for v in found]
  lines = [markdown_table(["M2m row", against, "paired seeds", "Δ test bACC", "95% CI",
                           "verdict"], body), ""]
  return lines + [f"- {label(v['row'])} vs {label(v['against'])}: {claim[v['verdict']]}."
                  for v in found]


def verdict_markdown(found: Sequence[dict], rows: Dict[str, tuple]) -> str:
  """The verdict section: a table and one sentence per M2m row."""
  if not found:
    return ""
  claim = {"holds": "the paper's claim that it beats the family's best holds here",
           "fails": "the family's best beats it here, against the paper's claim",
           "unresolved": "the seeds cannot tell them apart (the interval contains 0)"}
  lines = ["## Verdict", ""] + _verdict_lines(found, rows, "best other row of its loss", claim)
  return "\n".join(lines + [""])


def la_verdict_markdown(found: Sequence[dict], rows: Dict[str, tuple]) -> str:
  """The verdict against the logit-adjustment family (`la_verdict_families`): a table and one
  sentence per M2m row, as measured whichever way it goes."""
  if not found:
    return ""
  family = ", ".join(rows[k][0] for k in LA_FAMILY if k in rows)
  claim = {"holds": "M2m beats the logit-adjustment family's best here",
           "fails": "the logit-adjustment family's best beats it here",
           "unresolved": "the seeds cannot tell them apart (the interval contains 0)"}
  lines = ["### M2m against the logit-adjustment family", "",
           f"Each M2m row minus the best of {family} (the highest mean test bACC: a test-set "
           "choice, which can only make M2m's case harder), paired by seed, with the 95% "
           "Student-t interval of the per-seed differences.", ""]
  lines += _verdict_lines(found, rows, "best of the LA family", claim)
  return "\n".join(lines + [""])
