"""Table rows (the paper's Table 2 and ablations), the paper's numbers, and the collector.

`collect(run_root, ...)` reads every `results.json` under a grid's run folder
with pandas and writes `results/<name>.csv` (one row per run) and
`results/<name>.md` (mean ± std per row beside the paper's numbers).

Only a complete grid (every row of its table for every seed of
`CANONICAL_SEEDS`, all finished) may replace the committed tables;
`grid_gaps` says what a grid lacks and `output_dir` sends a partial one
to `<results_dir>/partial/`.
"""

import glob
import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from data_prep.atomic import atomic_write_json, atomic_write_text, read_json
from m2m_tf import logit_adjustment as la
from launch import over_seeds
from m2m_tf.markdown import markdown_table
from m2m_tf.run_records import FLAGS_FILE, HISTORY_FILE, POSTHOC_FILE, RESULTS_FILE
from m2m_tf.run_records import flatten_record

# The seeds of a committed table (the paper reports the mean of 3 seeds).
CANONICAL_SEEDS = (0, 1, 2, 3, 4)  # a committed table has every row for each of them
# A partial grid or selection goes here, under the results folder.
PARTIAL_DIR = "partial"

# Row key -> (label, main.py flags). Table 2 of the paper, in its order.
TABLE2_ROWS: Dict[str, tuple] = {
    "erm": ("ERM", {"loss": "ce", "method": "erm"}),
    "rs": ("ERM-RS", {"loss": "ce", "method": "rs"}),
    "smote": ("ERM-SMOTE", {"loss": "ce", "method": "smote"}),
    "rw": ("ERM-RW", {"loss": "ce", "method": "rw"}),
    "cb_rw": ("ERM-CB-RW", {"loss": "ce", "method": "cb_rw"}),
    "drs": ("ERM-DRS", {"loss": "ce", "method": "drs"}),
    "m2m": ("ERM-M2m", {"loss": "ce", "method": "m2m"}),
    "focal": ("Focal", {"loss": "focal", "method": "erm"}),
    "ldam": ("LDAM", {"loss": "ldam", "method": "erm"}),
    "ldam_drw": ("LDAM-DRW", {"loss": "ldam", "method": "drw"}),
    "ldam_m2m": ("LDAM-M2m", {"loss": "ldam", "method": "m2m"}),
}

# Ablations (docs/method.md#ablations; paper Tables 3-5), each a flag value on top of ERM-M2m.
ABLATION_ROWS: Dict[str, tuple] = {
    "m2m": ("M2m", {}),
    "m2m_self": ("M2m-Self (g := f)", {"self_translation": True}),
    "m2m_no_reject": ("M2m-No-Reject", {"no_reject": True}),
    "m2m_gamma0": ("M2m, gamma = 0", {"gamma": 0.0}),
    "m2m_lam0": ("M2m, lam = 0", {"lam": 0.0}),
    "m2m_clean": ("M2m-Clean", {"accept_mode": "clean"}),
    "m2m_rs": ("M2m-RS (phase 2 from epoch 0)", {"deferred_epoch": 0}),
    # The paper's RS-Rand is M2m-RS (phase 2 from epoch 0) with random labels.
    "m2m_rs_rand": ("M2m-RS-Rand (M2m-RS, random labels)",
                    {"deferred_epoch": 0, "accept_mode": "random_label"}),
    "m2m_ensemble": ("M2m-Ensemble (two g)", {"g_ensemble": 2}),
    **{f"m2m_pool{p}": (f"M2m, seed pool P = {p}", {"seed_pool_size": p})
       for p in (10, 50, 100, 200, 500)},
}

# The paper's reported bACC / GM (mean of 3 seeds), per dataset and row.
PAPER = {
    "reuters": {
        "erm": (59.8, 53.8), "rs": (63.3, 57.4), "smote": (62.5, 56.8), "rw": (65.0, 59.2),
        "cb_rw": (64.8, 57.6), "drs": (62.4, 56.0), "m2m": (66.3, 60.5), "focal": (59.4, 53.0),
        "ldam": (63.0, 57.6), "ldam_drw": (64.1, 56.9), "ldam_m2m": (70.0, 63.9),
    },
    "cifar10_lt": {
        "erm": (68.7, 66.4), "rs": (70.4, 69.0), "smote": (71.5, 70.2), "rw": (72.8, 72.0),
        "cb_rw": (71.2, 70.0), "drs": (75.2, 73.9), "m2m": (78.3, 77.8), "focal": (68.3, 65.5),
        "ldam": (72.8, 70.8), "ldam_drw": (77.1, 76.7), "ldam_m2m": (79.1, 78.6),
    },
}


# Beyond the paper (labelled so): Reuters with a wider bag of words, and Twitter with each
# offline embedding substitute. Each row builds on the Table-2 row named by "row".
_VOCAB_BASE = ("erm", "drs", "m2m", "ldam_drw", "ldam_m2m")
VOCAB_ROWS: Dict[str, tuple] = {
    f"{row}_v{v}": (f"{TABLE2_ROWS[row][0]}, {v} words", {"row": row, "vocab_size": v})
    for v in (2000, 5000) for row in _VOCAB_BASE}
# The n-gram rows are Table 2's own runs (ngram is Twitter's default substitute).
SUBSTITUTE_ROWS: Dict[str, tuple] = {
    **{row: (f"{TABLE2_ROWS[row][0]}, ngram substitute", {}) for row in ("erm", "drs", "m2m")},
    **{f"{row}_random": (f"{TABLE2_ROWS[row][0]}, random substitute",
                         {"row": row, "substitute": "random"}) for row in ("erm", "drs", "m2m")}}

# Beyond the paper: the logit-adjustment family (Menon et al., ICLR 2021; Ren et al., NeurIPS
# 2020; docs/method.md#logit-adjustment-and-balanced-softmax) under the same protocol. A row with
# "posthoc_of" trains nothing: it is that row's runs, each adjusted post hoc with tau chosen on
# its own validation bACC (`m2m_tf.evaluate --posthoc_tau=select`, POSTHOC_FILE in the run).
LA_ROWS: Dict[str, tuple] = {
    "la": ("LA (loss)", {"loss": "logit_adjusted", "method": "erm"}),
    "balanced_softmax": ("Balanced Softmax", {"loss": "balanced_softmax", "method": "erm"}),
    "erm_posthoc_la": ("ERM + post-hoc LA", {"posthoc_of": "erm"}),
    "la_m2m": ("LA-M2m", {"loss": "logit_adjusted", "method": "m2m"}),
}
EXTRA_ROW_LABELS = {k: label for k, (label, _) in LA_ROWS.items()}
# The rows of a Table-2 grid: the paper's, then the logit-adjustment family.
TABLE2_GRID_ROWS: Dict[str, tuple] = {**TABLE2_ROWS, **LA_ROWS}

TABLES = {"table2": TABLE2_GRID_ROWS, "ablations": ABLATION_ROWS, "vocab": VOCAB_ROWS,
          "substitutes": SUBSTITUTE_ROWS}
# Tables that only make sense on some datasets.
TABLE_DATASETS = {"vocab": ("reuters",), "substitutes": ("twitter",)}


# How the tables name each --momentum_form (docs/method.md, difference 9).
MOMENTUM_FORMS = {"keras": "Keras' form (lr inside the buffer)",
                  "pytorch": "PyTorch's form (the official code's)"}


def momentum_forms(run_root: str, runs: Sequence[str]) -> Dict[str, int]:
  """How many of the run folders `runs` under `run_root` trained in each --momentum_form, as
  their flags.json says (a run recorded before the field existed ran Keras' form)."""
  counts: Dict[str, int] = {}
  for run in runs:
    flags = flatten_record(read_json(os.path.join(run_root, run, FLAGS_FILE)) or {})
    form = flags.get("momentum_form") or "keras"
    counts[form] = counts.get(form, 0) + 1
  return counts


def momentum_form_note(counts: Dict[str, int]) -> str:
  """A table's line on SGD's momentum form, from `momentum_forms`' counts."""
  if len(counts) > 1:
    text = ", ".join(f"{MOMENTUM_FORMS[f]} in {n} runs" for f, n in sorted(counts.items()))
  else:
    text = MOMENTUM_FORMS[next(iter(counts), "keras")]
  return (f"SGD momentum in {text}; the two forms differ after each lr change "
          "(docs/method.md, difference 9).")


def grid_gaps(run_root: str, table: str, rows: Sequence[str], seeds: Sequence[int]) -> List[str]:
  """Why a grid is not the complete `table` (empty when it is).

  Args:
    run_root: the grid's run folder (`<row>_s<seed>/results.json` per finished run).
    table: a key of TABLES.
    rows: the row keys the grid was asked for.
    seeds: the seeds it was asked for.

  Returns:
    Short reasons: rows or canonical seeds left out, unfinished runs (of the
    rows and seeds asked for).
  """
  all_rows = list(TABLES[table])
  gaps = []
  left_out = [r for r in all_rows if r not in rows]
  if left_out:
    gaps.append(f"{len(left_out)} of {len(all_rows)} rows left out")
  seeds_out = [s for s in CANONICAL_SEEDS if s not in seeds]
  if seeds_out:
    gaps.append(f"seeds {','.join(map(str, seeds_out))} of {','.join(map(str, CANONICAL_SEEDS))} "
                "left out")
  rows_of = TABLES[table]
  runs = [(r, s) for r in all_rows if r in rows for s in seeds]
  unfinished = []
  for r, s in runs:
    marker = finished_marker(rows_of, r, s)
    if not os.path.exists(os.path.join(run_root, marker)):  # a trained run by its folder's name
      unfinished.append(marker if posthoc_base(rows_of, r) else f"{r}_s{s}")
  if unfinished:
    gaps.append(f"{len(unfinished)} of {len(runs)} runs unfinished (e.g. {unfinished[0]})")
  return gaps


def posthoc_base(rows: Dict[str, tuple], key: str) -> Optional[str]:
  """The row whose runs the post-hoc row `key` adjusts ("posthoc_of"); None for a trained row."""
  return rows[key][1].get("posthoc_of") if key in rows else None


def finished_marker(rows: Dict[str, tuple], key: str, seed: int) -> str:
  """The file, relative to a grid's run folder, that makes row `key` with `seed` finished:
  `<key>_s<seed>/results.json`, or for a post-hoc row its base run's POSTHOC_FILE."""
  base = posthoc_base(rows, key)
  if base:
    return f"{base}_s{seed}/{POSTHOC_FILE}"
  return f"{key}_s{seed}/results.json"


def output_dir(results_dir: str, gaps: Sequence[str]) -> str:
  """Where a table goes: `results_dir` when complete (no gaps), else its partial/ folder."""
  return os.path.join(results_dir, PARTIAL_DIR) if gaps else results_dir


def where_line(kind: str, files: str, results_dir: str, gaps: Sequence[str]) -> str:
  """The one line saying which files a grid or selection wrote (and which it left alone).

  Args:
    kind: "grid" or "selection".
    files: the file names, e.g. "reuters.{csv,md}".
    results_dir: the committed results folder.
    gaps: what is missing (`grid_gaps`); empty for a complete one.
  """
  written = os.path.join(output_dir(results_dir, gaps), files)
  if not gaps:
    return f"Complete {kind}: wrote {written}."
  return (f"Partial {kind} ({'; '.join(gaps)}): wrote {written}; "
          f"{os.path.join(results_dir, files)} left unchanged.")


def write_selection(results_dir: str, stem: str, record: dict, md: str,
                    gaps: Sequence[str]) -> None:
  """Writes a selection's <stem>.json and .md (under partial/ when `gaps`), prints where."""
  out_dir = output_dir(results_dir, gaps)
  atomic_write_json(os.path.join(out_dir, f"{stem}.json"), {**record, "complete": not gaps})
  atomic_write_text(os.path.join(out_dir, f"{stem}.md"), md)
  print(md)
  print(where_line("selection", f"{stem}.{{json,md}}", results_dir, gaps))


def load_runs(run_root: str) -> pd.DataFrame:
  """One row per finished run (a `results.json` directly under a run folder of `run_root`)."""
  rows = []
  for path in sorted(glob.glob(os.path.join(run_root, "*", RESULTS_FILE))):
    with open(path) as fh:
      r = json.load(fh)
    run = os.path.basename(os.path.dirname(path))
    rows.append(_run_record(run, run.rsplit("_s", 1)[0], r))
  return pd.DataFrame(rows)


def _run_record(run: str, row: str, r: dict) -> dict:
  """The table's columns of one run of `row` in folder `run`, from its results.json `r`."""
  return {
    "run": run,
    "row": row,
    "loss": r["loss"],
    "rebalancing": r["rebalancing"],
    "seed": r["seed"],
    "test_bacc": r["test_bacc"],
    "test_gm": r["test_gm"],
    "n_zero_recall": r["n_zero_recall"],
    "zero_recall_classes": ";".join(zero_recall_names(r)),
    "val_bacc": r["val_bacc"],
    "val_gm": r["val_gm"],
    "major_acc": r["test"].get("major_acc"),
    "minor_acc": r["test"].get("minor_acc"),
    "best_epoch": r["best_epoch"],
    "seconds": r["seconds"],
    "data_label": r.get("data_label", ""),
    **_recall_columns(r),
  }


def check_posthoc_choice(post: dict, where: str = POSTHOC_FILE) -> float:
  """The tau of a post-hoc record, checked to be the VALIDATION choice; else ValueError.

  The record must come from `--posthoc_tau=select` (mode "select"), and its tau must be the
  smallest value of its grid with the best validation bACC (`la.select_tau`'s rule), re-derived
  here from the record's validation curve: a tau fixed by hand, or picked on test, is refused.
  """
  if post.get("mode") != la.SELECT:
    raise ValueError(f"{where}: tau {post.get('tau')} was fixed (mode {post.get('mode')!r}), "
                     "not chosen on validation (--posthoc_tau=select)")
  grid, val = post["grid"], post["grid_val_bacc"]
  best = max(val)
  chosen = min(t for t, v in zip(grid, val) if best - v <= la.TIE_TOLERANCE)
  if post["tau"] != chosen:
    raise ValueError(f"{where}: tau {post['tau']} is not the validation choice {chosen} of "
                     f"its grid")
  return chosen


def _posthoc_record(run: str, row: str, results: dict, post: dict) -> dict:
  """The table's columns of the post-hoc row `row` on run `run`: the run's results.json, its
  metrics replaced by those at the validation-chosen tau of its POSTHOC_FILE `post`."""
  test = post["test"]
  adjusted = {**results, "test_bacc": post["test_bacc"], "test_gm": post["test_gm"],
              "n_zero_recall": test["n_zero_recall"], "val_bacc": post["val_bacc"],
              "val_gm": post["val_gm"], "test": test, "per_class_recall": test["per_class_recall"],
              "class_names": post.get("class_names") or results.get("class_names"),
              "seconds": results["seconds"] + post["seconds"]}
  return {**_run_record(run, row, adjusted), "posthoc_tau": check_posthoc_choice(post, run),
          "raw_val_bacc": post["val_raw"]["bacc"], "raw_test_bacc": post["test_raw"]["bacc"]}


def load_posthoc_runs(run_root: str, rows: Dict[str, tuple]) -> pd.DataFrame:
  """One row per post-hoc run: for each row of `rows` with "posthoc_of" (its base row), every
  run `<base>_s<seed>` under `run_root` with a POSTHOC_FILE, at the tau chosen on validation."""
  out = []
  for key in rows:
    base = posthoc_base(rows, key)
    if not base:
      continue
    for path in sorted(glob.glob(os.path.join(run_root, f"{base}_s*", POSTHOC_FILE))):
      run_dir = os.path.dirname(path)
      run = os.path.basename(run_dir)
      if re.fullmatch(rf"{re.escape(base)}_s\d+", run):  # not erm_vocab_size2000_s0
        out.append(_posthoc_record(run, key, read_json(os.path.join(run_dir, RESULTS_FILE)),
                                   read_json(path)))
  return pd.DataFrame(out)


def class_recalls(results: dict) -> List[Tuple[str, float]]:
  """(class name, test recall in percent) of one run's results, in class order."""
  recall = results.get("per_class_recall") or []
  names = results.get("class_names") or [str(k) for k in range(len(recall))]
  return list(zip(names, recall))


def _recall_columns(results: dict) -> Dict[str, float]:
  """{'recall_<class name>': test recall (percent)} of one run's results."""
  return {f"recall_{n}": r for n, r in class_recalls(results)}


def zero_recall_names(results: dict) -> List[str]:
  """The names of the test classes with zero recall in one run's results."""
  return [n for n, r in class_recalls(results) if r == 0]


def _zero_recall_summary(sub: pd.DataFrame) -> str:
  """'carcass 3/3, zinc 2/3': each class with zero recall, in how many of the row's seeds."""
  counts: Dict[str, int] = {}
  if "zero_recall_classes" not in sub:
    return ""
  for cell in sub.zero_recall_classes.fillna(""):
    for name in filter(None, str(cell).split(";")):
      counts[name] = counts.get(name, 0) + 1
  ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
  return ", ".join(f"{n} {c}/{len(sub)}" for n, c in ranked)



def posthoc_markdown(df: pd.DataFrame, rows: Dict[str, tuple]) -> str:
  """Per seed of each post-hoc row: the tau chosen on validation, and the validation and test
  bACC of the unadjusted run -> adjusted."""
  if "posthoc_tau" not in df or df["posthoc_tau"].isna().all():
    return ""
  lines = ["## Post-hoc logit adjustment", "",
           f"tau chosen per run from {{{', '.join(f'{t:g}' for t in la.TAU_GRID)}}} on its "
           "validation bACC only (`python -m m2m_tf.evaluate --checkpoint=RUN "
           "--posthoc_tau=select`); the test split is read after the choice. No retraining.", ""]
  for key, sub in df[df["posthoc_tau"].notna()].groupby("row", sort=False):
    body = [[r.seed, f"{r.posthoc_tau:g}", f"{r.raw_val_bacc:.1f} → {r.val_bacc:.1f}",
             f"{r.raw_test_bacc:.1f} → {r.test_bacc:.1f}"] for r in sub.itertuples()]
    lines += [f"{rows[key][0]} (runs of {rows[posthoc_base(rows, key)][0]}):", "",
              markdown_table(["seed", "tau", "val bACC: raw → adjusted",
                              "test bACC: raw → adjusted"], body), ""]
  return "\n".join(lines)


def _pm(series: pd.Series) -> str:
  std = series.std(ddof=1) if len(series) > 1 else float("nan")
  return f"{series.mean():.1f} ± {std:.1f}" if len(series) > 1 else f"{series.mean():.1f}"


def _table_row(label: str, sub: pd.DataFrame, p: Optional[tuple]) -> list:
  """The cells of one table row: a row key's runs `sub` beside the paper's (bACC, GM) `p`."""
  return [label, len(sub), _pm(sub.test_bacc), _pm(sub.test_gm),
          f"{p[0]:.1f} / {p[1]:.1f}" if p else "n/a",
          f"{sub.test_bacc.mean() - p[0]:+.1f}" if p else "",
          f"{sub.test_gm.mean() - p[1]:+.1f}" if p else "",
          f"{sub.n_zero_recall.mean():.1f}", _zero_recall_summary(sub), _pm(sub.val_bacc),
          f"{sub.seconds.mean():.0f}", _ci(sub.test_bacc)]


def _ci(series: pd.Series) -> str:
  _, low, high = over_seeds.t_interval(series.to_numpy())
  return "n/a" if np.isnan(low) else f"[{low:.1f}, {high:.1f}]"


def results_markdown(df: pd.DataFrame, rows: Dict[str, tuple], paper: Optional[dict], title: str,
                     notes: Sequence[str] = ()) -> str:
  """Mean ± std per row (bACC, GM, zero-recall classes, seconds) with the paper's figures."""
  lines = [f"# {title}", ""]
  lines += [f"{n}" for n in notes]
  if notes:
    lines.append("")
  header = ["method", "seeds", "bACC", "GM", "paper bACC / GM", "Δ bACC", "Δ GM",
            "zero-recall classes", "which (seeds)", "val bACC", "s / run", "bACC 95% CI"]
  body = [_table_row(label, df[df["row"] == key], (paper or {}).get(key))
          for key, (label, _) in rows.items() if not df[df["row"] == key].empty]
  lines += [markdown_table(header, body), ""]
  return "\n".join(lines)


def collect(run_root: str, name: str, rows: Dict[str, tuple], *, paper: Optional[dict] = None,
            results_dir: str = "results", title: Optional[str] = None,
            notes: Sequence[str] = (), seeds: Optional[Sequence[int]] = None,
            sections: Sequence[str] = ()) -> pd.DataFrame:
  """Writes results/<name>.csv, <name>.md and <name>_history.csv from the runs under `run_root`.

  One CSV row per run, with its per-class test recall (`recall_<class>`); the
  history CSV holds every run's per-epoch record. Only the given rows (and
  seeds, when given: the ensemble ablation's extra ERM g runs live in the same
  folder) enter the tables; `sections` are Markdown appended to the table.
  """
  df = pd.concat([load_runs(run_root), load_posthoc_runs(run_root, rows)], ignore_index=True)
  if df.empty:
    raise FileNotFoundError(f"No finished run (results.json) under {run_root}.")
  df = df[df["row"].isin(list(rows))]
  if seeds is not None:
    df = df[df["seed"].isin(list(seeds))]
  order = {k: i for i, k in enumerate(rows)}
  df = df.sort_values(by=["row", "seed"], key=lambda s: s.map(order) if s.name == "row" else s)
  os.makedirs(results_dir, exist_ok=True)
  atomic_write_text(os.path.join(results_dir, f"{name}.csv"), df.to_csv(index=False))
  labels = sorted(set(df["data_label"]) - {""})
  all_notes = list(notes) + [momentum_form_note(momentum_forms(run_root, df["run"].unique()))] + [
      f"Data: {l}." for l in labels]
  md = results_markdown(df, rows, paper, title or name, all_notes)
  v = over_seeds
  parts = [v.verdict_markdown(v.verdicts(df, families=v.verdict_families(list(rows))), rows),
           v.la_verdict_markdown(v.verdicts(df, families=v.la_verdict_families(list(rows))), rows),
           posthoc_markdown(df, rows)]
  md = "\n".join([md] + [p for p in parts + list(sections) if p])  # a blank line between
  atomic_write_text(os.path.join(results_dir, f"{name}.md"), md)
  trained = df[df["posthoc_tau"].isna()] if "posthoc_tau" in df else df  # a post-hoc row's
  atomic_write_text(os.path.join(results_dir, f"{name}_history.csv"),  # epochs are its base's
                    histories(run_root, trained).to_csv(index=False))
  return df


def histories(run_root: str, df: pd.DataFrame) -> pd.DataFrame:
  """Every run's per-epoch history.csv (the audit trail of a table), keyed by run, row, seed."""
  parts = []
  for run, row, seed in zip(df["run"], df["row"], df["seed"]):
    h = pd.read_csv(os.path.join(run_root, run, HISTORY_FILE))
    h.insert(0, "seed", seed)
    h.insert(0, "row", row)
    parts.append(h)
  return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
