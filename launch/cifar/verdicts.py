"""Paired comparisons of the CIFAR-10-LT rows on the same test images (one training seed).

The full-schedule plan trains one seed per row (days of CPU each), so the seed-to-seed
spread the text tables report is not available here. What can be measured is how much
of a difference between two rows the finite test set could produce by chance: a paired
bootstrap over the test images (both rows' predictions of an image stay together),
with scipy's `stats.bootstrap`. The interval says nothing about another training seed.

The predictions come from each row's best-validation weights (`best_f.weights.h5`) and
are kept in `results/cifar10_jpeg_lt_predictions.npz` beside the weights' sha256, so a
table-only report can use them without TensorFlow and notices when a row's weights
changed after the predictions were made.
"""

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

from data_prep.atomic import atomic_save, file_sha256, read_json
from launch.over_seeds import verdict_word
from m2m_tf.metrics import confusion_matrix
from m2m_tf.run_records import BEST_STATE_FILE

PREDICTIONS = "cifar10_jpeg_lt_predictions.npz"
# (row, compared with): M2m against the rows the paper's claim is about.
VERDICTS = (("m2m", "erm"), ("m2m", "drs"), ("ldam_m2m", "ldam"), ("ldam_m2m", "ldam_drw"),
            ("m2m_per_sample", "erm"), ("m2m_per_sample", "drs"), ("m2m", "m2m_per_sample"))
N_RESAMPLES = 2000


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, num_classes: int, axis: int = -1):
  """Mean per-class recall in percent along `axis` (classes absent from y are left out)."""
  recalls = []
  for k in range(num_classes):
    in_k = y == k
    n_k = in_k.sum(axis=axis)
    hits = (in_k & (pred == k)).sum(axis=axis)
    recalls.append(np.where(n_k > 0, hits / np.maximum(n_k, 1), np.nan))
  return 100.0 * np.nanmean(np.stack(recalls), axis=0)


def paired_difference(y, pred_a, pred_b, num_classes: int, *, n_resamples: int = N_RESAMPLES,
                      seed: int = 0) -> Tuple[float, float, float]:
  """bACC(a) - bACC(b) in points and its 95% paired-bootstrap percentile interval."""
  y, a, b = (np.asarray(v) for v in (y, pred_a, pred_b))

  def diff(y_, a_, b_, axis=-1):
    return (balanced_accuracy(y_, a_, num_classes, axis)
            - balanced_accuracy(y_, b_, num_classes, axis))

  point = float(diff(y, a, b))
  if np.array_equal(a, b):
    return point, point, point
  res = stats.bootstrap((y, a, b), diff, paired=True, vectorized=True, n_resamples=n_resamples,
                        batch=100, confidence_level=0.95, method="percentile",
                        rng=np.random.default_rng(seed))
  return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def apply_in_batches(model, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
  """`model`'s outputs on uint8 images x, scaled to [0, 1] as in training, `batch_size` at a
  time (inference mode)."""
  out = [np.asarray(model(x[i:i + batch_size].astype(np.float32) / 255.0, training=False))
         for i in range(0, len(x), batch_size)]
  return np.concatenate(out)


def predict(f, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
  """f's predicted classes of uint8 images x."""
  return np.argmax(apply_in_batches(f, x, batch_size), axis=-1).astype(np.int16)


def confusion_check(run, y: np.ndarray, pred: np.ndarray, num_classes: int) -> Optional[int]:
  """How many test images the run's own best-epoch confusion matrix (best_state.json) and
  these predictions disagree on, counted cell by cell; None if the run recorded none."""
  best = read_json(os.path.join(run.run_dir, BEST_STATE_FILE)) or {}
  cm = ((best.get("summaries") or {}).get("test") or {}).get("confusion_matrix")
  if cm is None:
    return None
  mine = confusion_matrix(y, pred, num_classes)
  return int(np.abs(mine - np.asarray(cm)).sum() // 2)


def _stored(path: str) -> Dict[str, np.ndarray]:
  if not os.path.isfile(path):
    return {}
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


def write_predictions(runs, y: np.ndarray, predict_run, path: str) -> Dict[str, np.ndarray]:
  """Saves every finished row's test predictions with its weights' sha256.

  A row whose stored predictions were made from the same weights keeps them; the others
  are predicted with `predict_run(run)`. Returns {run key: predictions}.
  """
  stored, arrays, preds = _stored(path), {"y_test": np.asarray(y, np.int16)}, {}
  for run in runs:
    if run.finished and run.weights:
      sha = file_sha256(run.weights)
      same = run.key in stored and str(stored[run.key + "_sha256"]) == sha
      preds[run.key] = stored[run.key] if same else predict_run(run)
      arrays[run.key], arrays[run.key + "_sha256"] = preds[run.key], np.array(sha)
  atomic_save(lambda tmp: np.savez_compressed(tmp, **arrays), path)
  return preds


def read_predictions(runs, path: str) -> Tuple[Optional[np.ndarray], Dict[str, np.ndarray],
                                               List[str]]:
  """(y_test, {run key: predictions} of runs whose weights still match, stale run keys)."""
  stored = _stored(path)
  if not stored:
    return None, {}, []
  preds, stale = {}, []
  for run in runs:
    if run.key not in stored or not run.weights:
      continue
    if str(stored[run.key + "_sha256"]) == file_sha256(run.weights):
      preds[run.key] = stored[run.key]
    else:
      stale.append(run.key)
  return stored.get("y_test"), preds, stale


def verdict_lines(y, preds: Dict[str, np.ndarray], stale: Sequence[str], num_classes: int,
                  labels: Dict[str, str], seed: int = 0,
                  finished: Sequence[str] = ()) -> List[str]:
  """The Markdown of one training seed's paired comparisons, `preds` and `labels` keyed by row
  (what is missing is said, not skipped; `finished` names the rows whose run finished)."""
  lines = [f"Seed {seed}, paired differences on the test images (95% percentile bootstrap over "
           f"test images, {N_RESAMPLES} resamples; this seed's runs only, so the spread over "
           "seeds is not in the interval):", ""]
  for a, b in VERDICTS:
    if a not in labels or b not in labels:  # a row this table does not have
      continue
    name = f"- {labels[a]} - {labels[b]}: "
    missing = [s for s in (a, b) if s not in preds]
    if missing:
      why = ", ".join(f"{labels[s]} " + ("predictions stale" if s in stale else
                                         "without stored predictions" if s in finished else
                                         "not finished") for s in missing)
      lines.append(name + f"n/a ({why})")
      continue
    d, lo, hi = paired_difference(y, preds[a], preds[b], num_classes)
    lines.append(name + f"{d:+.1f} points [{lo:+.1f}, {hi:+.1f}]: {verdict_word(lo, hi)}")
  if stale:
    lines += ["", "Stale predictions (weights changed since): run `python -m launch.cifar.report` "
              "without --skip_figures."]
  return lines
