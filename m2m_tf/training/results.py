"""The end of a finished run: the exported f, the report, results.json (its last file)."""

import os
import time

from absl import logging

from data_prep.atomic import atomic_replace_dir, atomic_write_json
from m2m_tf import losses as losses_lib
from m2m_tf import report as report_lib
from m2m_tf import serving
from m2m_tf.config import ExperimentConfig
from m2m_tf.training import callbacks as cb
from m2m_tf.run_records import EXPORT_DIR, RESULTS_FILE


def loss_record(loss_fn) -> dict:
  """The trained loss's hyper-parameters for results.json (N_k is recorded on its own); an
  alias names the loss it is (balanced_softmax: logit_adjusted, tau 1)."""
  hparams = {k: v for k, v in getattr(loss_fn, "hparams", {}).items() if k != "class_counts"}
  alias = losses_lib.LOSS_ALIASES.get(getattr(loss_fn, "name", None))
  return dict(hparams, alias_of=alias[0]) if alias else hparams


def run_results(cfg: ExperimentConfig, data, trainer, evaluation, checkpoint, t0: float) -> dict:
  """results.json's content: the selected epoch's metrics (docs/method.md#metrics) and the run's
  settings, epoch times and machines; `seconds` counts from `t0` (this invocation)."""
  best, t = evaluation.best_summaries, cfg.training
  return {
      "dataset": cfg.data.dataset, "data_label": data.label, "method": t.method,
      "rebalancing": "none" if t.method == "erm" else t.method, "loss": t.loss,
      "loss_hparams": loss_record(trainer.loss_fn),
      "seed": cfg.seed, "output_dir": cfg.output_dir, "best_epoch": evaluation.best_epoch,
      "test_bacc": best["test"]["bacc"], "test_gm": best["test"]["gm"],
      "val_bacc": best["val"]["bacc"], "val_gm": best["val"]["gm"],
      "n_zero_recall": best["test"]["n_zero_recall"],
      "per_class_recall": best["test"]["per_class_recall"],
      "test": best["test"], "val": best["val"],
      "class_counts": data.class_counts.tolist(), "class_names": list(data.class_names),
      "clip_range": None if data.clip_range is None else list(data.clip_range),
      "jit_compile": bool(trainer.jit_compile), "strategy": cfg.runtime.strategy,
      "precision": cfg.runtime.precision,
      "warnings": cb.chance_warnings(best["val"]["bacc"], data.num_classes),
      "seconds": time.time() - t0,
      # Every epoch's wall time across all invocations (a branched run: the source's first).
      "epoch_seconds": checkpoint.epoch_seconds,
      "epoch_machines": checkpoint.epoch_machines,  # where each epoch ran (None: not recorded)
  }


def write_report(cfg: ExperimentConfig, data, trainer, results: dict) -> None:
  """The run's report (figures/, report.md: `m2m_tf.report`) with f at its best weights.

  Drawn before results.json, so a run killed before its end gets it when it ends. A failure to
  draw is a warning, not a lost run: `python -m m2m_tf.report` draws it again.
  """
  try:
    report_lib.write_report(cfg.output_dir, results, report_lib.grid_models(trainer, data))
  except Exception as e:  # any failure to draw: the run itself is done
    logging.warning("%s: no report (%s: %s); run python -m m2m_tf.report %s", cfg.output_dir,
                    type(e).__name__, e, cfg.output_dir, exc_info=True)


def export_and_report(cfg: ExperimentConfig, data, trainer, evaluation, checkpoint, t0: float,
                      is_chief: bool = True) -> dict:
  """Exports the best f (saved_model/), writes the report (on the chief only: the other workers'
  folders are private), then results.json, then drops the checkpoints; returns the results."""
  f = trainer.f
  f.set_weights(evaluation.best_weights)
  export_dir = os.path.join(cfg.output_dir, EXPORT_DIR)
  if cfg.runtime.export:
    # Text datasets also get a raw-text endpoint (docs/runs.md#serving-the-exported-model).
    atomic_replace_dir(lambda p: serving.export_saved_model(
        f, p, data.text_features, class_names=data.class_names), export_dir)
  results = run_results(cfg, data, trainer, evaluation, checkpoint, t0)
  for w in results["warnings"]:
    logging.warning("%s: %s", cfg.output_dir, w)
  if is_chief:
    write_report(cfg, data, trainer, results)
  atomic_write_json(os.path.join(cfg.output_dir, RESULTS_FILE), results)
  checkpoint.finalize()
  return results
