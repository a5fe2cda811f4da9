"""Equal tuning budgets: every row of Table 2 gets the same number of settings, chosen on
validation bACC only (docs/method.md#hyper-parameters-and-their-selection).

Each row searches its own knobs, with the learning rate and weight decay filling the
budget where a method has fewer knobs of its own:

  ERM, RS, SMOTE, RW   lr x weight decay
  CB-RW                CB beta x lr x weight decay
  Focal                focal gamma x lr x weight decay
  LDAM                 largest margin x scale x lr
  DRS, LDAM-DRW        deferral epoch x lr x weight decay
  ERM-M2m, LDAM-M2m    the paper's M2m grid: beta x lam x gamma
  LA (loss)            LA tau x lr x weight decay
  Balanced Softmax     lr x weight decay (its tau is fixed at 1)
  LA-M2m               the paper's M2m grid: beta x lam x gamma
  ERM + post-hoc LA    no search of its own: ERM's selected setting; tau is chosen post hoc
                       on each run's validation bACC (tables.LA_ROWS, launch.grid)

All budgets have BUDGET_SIZE settings (the size of the paper's M2m grid), so no row is
favoured by a larger search. A setting is a dict of main.py flags on top of the row's
own; the deferral epochs are fractions of the dataset's epochs, turned into epochs by
`row_budget`.
"""

import itertools
import json
import os
from typing import Dict, List, Optional

import pandas as pd

from launch import tables
from m2m_tf.markdown import markdown_table
from data_prep.registry import get_recipe
from m2m_tf.run_records import RESULTS_FILE

BUDGET_SIZE = 18

_LR = (0.05, 0.1, 0.2)
_WD6 = (1e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3)
_WD2 = (5e-5, 2e-4)
_DEFER_FRACTIONS = (0.5, 2 / 3, 0.8)


def _grid(**axes) -> List[dict]:
  """Every combination of the axes' values, as flag dicts (axis order kept)."""
  names = list(axes)
  return [dict(zip(names, values)) for values in itertools.product(*axes.values())]


SPACES: Dict[str, List[dict]] = {
    **{row: _grid(lr=_LR, weight_decay=_WD6) for row in ("erm", "rs", "smote", "rw")},
    "cb_rw": _grid(cb_beta=(0.99, 0.999, 0.9999), lr=_LR, weight_decay=_WD2),
    "focal": _grid(focal_gamma=(0.5, 1.0, 2.0), lr=_LR, weight_decay=_WD2),
    "ldam": _grid(ldam_max_margin=(0.3, 0.5, 0.7), ldam_scale=(10.0, 30.0), lr=_LR),
    **{row: _grid(deferred_fraction=_DEFER_FRACTIONS, lr=_LR, weight_decay=_WD2)
       for row in ("drs", "ldam_drw")},
    **{row: _grid(beta=(0.9, 0.99, 0.999), lam=(0.01, 0.1, 0.5), gamma=(0.9, 0.99))
       for row in ("m2m", "ldam_m2m", "la_m2m")},
    "la": _grid(la_tau=(0.5, 1.0, 2.0), lr=_LR, weight_decay=_WD2),
    "balanced_softmax": _grid(lr=_LR, weight_decay=_WD6),
}
# The rows `launch.tune` searches, in the table's order (a post-hoc row has no search).
TUNED_ROWS = tuple(row for row in tables.TABLE2_GRID_ROWS if row in SPACES)
# How the tables name the form a row was tuned in (tables.MOMENTUM_FORMS, shorter).
_FORM_NAMES = {"keras": "Keras'", "pytorch": "PyTorch's"}


def row_budget(row: str, dataset: str) -> List[dict]:
  """The row's settings as main.py flags (deferral fractions become the dataset's epochs)."""
  epochs = get_recipe(dataset).epochs
  out = []
  for setting in SPACES[row]:
    setting = dict(setting)
    fraction = setting.pop("deferred_fraction", None)
    if fraction is not None:
      setting["deferred_epoch"] = int(round(fraction * epochs))
    out.append(setting)
  return out


def setting_name(setting: dict) -> str:
  """A folder-safe name of a setting, e.g. 'lr0.1_weight_decay5e-05'."""
  return "_".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}"
                  for k, v in sorted(setting.items()))


def select(settings) -> tuple:
  """(row -> the selected setting, the table of mean val bACC); test metrics are not read."""
  records = []
  for row, setting, s, out in settings:
    with open(os.path.join(out, RESULTS_FILE)) as fh:
      val = json.load(fh)["val_bacc"]
    records.append({"row": row, "setting": json.dumps(setting, sort_keys=True), "seed": s,
                    "val_bacc": val})
  mean = pd.DataFrame(records).groupby(["row", "setting"], as_index=False, sort=False)[
      "val_bacc"].mean()
  selected = {}
  for row, sub in mean.groupby("row", sort=False):
    best = sub.sort_values("val_bacc", ascending=False, kind="stable").iloc[0]
    selected[row] = json.loads(best.setting)
  return selected, mean


def space_text(row: str, dataset: str) -> str:
  """What a row's budget searches, e.g. 'lr {0.05, 0.1, 0.2} x weight_decay {...}'."""
  settings = row_budget(row, dataset)
  axes = {k: sorted({s[k] for s in settings}) for k in settings[0]}
  return " × ".join(f"{k} {{{', '.join(f'{v:g}' for v in vals)}}}" for k, vals in axes.items())


def form_text(counts: Dict[str, int]) -> str:
  """The momentum form of a row's tuning runs ({"keras": 18} -> "Keras'"), or each with its
  count when they differ; "?" when unknown."""
  if len(counts) == 1:
    return _FORM_NAMES.get(next(iter(counts)), "?")
  return ", ".join(f"{_FORM_NAMES.get(f, f)} {n}" for f, n in sorted(counts.items())) or "?"


def tuning_form_note(rows: Dict[str, tuple], forms: Dict[str, dict]) -> str:
  """A table's line naming the momentum form each row's setting was tuned in, when the rows'
  forms differ ("" otherwise). `forms`: row -> {form: tuning runs}; a post-hoc row has its base
  row's."""
  by_form: Dict[str, List[str]] = {}
  for key, (label, flags) in rows.items():
    counts = forms.get(flags.get("posthoc_of") or key)
    if counts:
      by_form.setdefault(form_text(counts), []).append(label)
  if len(by_form) < 2:
    return ""
  parts = "; ".join(f"in {form} form: {', '.join(labels)}" for form, labels in by_form.items())
  return (f"Settings tuned on validation {parts} (a post-hoc row: its base row's); every run of "
          "this table trained in the form of the SGD momentum line.")


def setting_text(setting: dict) -> str:
  """'lr=0.2, weight_decay=5e-05' (floats as %g), or '(none)'."""
  return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in setting.items()) or "(none)"


def _budget_rows(rows: Dict[str, tuple], selected: Dict[str, dict], dataset: str,
                 forms: Dict[str, dict]) -> list:
  """The tuning section's table body: searched space, selection and tuning form per row."""
  body = []
  for key, (label, flags) in rows.items():
    base = flags.get("posthoc_of")
    if key in SPACES:
      body.append([label, space_text(key, dataset), setting_text(selected.get(key, {})),
                   form_text(forms.get(key, {}))])
    elif base:
      body.append([label, f"none: {rows[base][0]}'s selection; tau post hoc on each run's "
                   "validation bACC", f"{rows[base][0]}'s: {setting_text(selected.get(base, {}))}",
                   form_text(forms.get(base, {}))])
  return body


def budget_markdown(table: str, rows: Dict[str, tuple], selected: Dict[str, dict],
                    dataset: str, forms: Optional[Dict[str, dict]] = None) -> str:
  """The table's section on tuning: each Table-2 row's search space, selected setting and the
  momentum form its tuning runs trained in (`forms`: row -> {form: runs}, the selection's
  "momentum_forms"), or, for a table built on Table-2 rows, which setting each row inherits."""
  lines = ["## Tuning budgets", ""]
  if not selected:
    return "\n".join(lines + ["No selection (results/budgets_<dataset>.json) was applied: "
                              "every row ran with the recipe's values.", ""])
  if table != "table2":
    lines += [f"Not tuned separately: each row takes the setting selected for the Table-2 row "
              f"it is built on (ablations: ERM-M2m's {json.dumps(selected.get('m2m', {}))}), "
              "then its own flags.", ""]
    return "\n".join(lines)
  lines += [f"Every trained row searched {BUDGET_SIZE} settings and kept the best mean "
            "validation bACC (`python -m launch.tune`); test metrics played no part. A post-hoc "
            "row trains nothing: it takes its base row's runs and chooses tau on each run's "
            "validation bACC. 'tuned in' is SGD's momentum form of the tuning runs (the table's "
            "runs name theirs above).", ""]
  body = _budget_rows(rows, selected, dataset, forms or {})
  return "\n".join(lines + [markdown_table(["row", "searched", "selected", "tuned in"], body),
                            ""])
