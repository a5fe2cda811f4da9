"""The report of every run (m2m_tf.report, m2m_tf.plots): files, and the plotted values.

Two short M2m runs, each with the g it trains (g_erm/, an ERM run with its own report):
Reuters (MLP, 2 epochs, killed when its report is due and resumed, so that its report comes
from the resume path) and an image folder (3 classes of 16x16 PNGs, ResNet-32, 2 epochs, with
the translation grid). The values each figure of the run's own report drew, read back from
its artists, must equal results.json's and history.csv's.
"""

import csv
import json
import os
import re
import tempfile
from unittest import mock

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from m2m_tf import plots
from m2m_tf import report
from data_prep.atomic import read_json
from m2m_tf.config import ExperimentConfig
from m2m_tf.data import pipeline
from m2m_tf.report import cli
from m2m_tf.training import run

# End-to-end: real training runs (skipped by the fast run: -m 'not slow').
pytestmark = pytest.mark.slow

_TMP = None


def setUpModule():
  global _TMP
  _TMP = tempfile.TemporaryDirectory(prefix="m2m_test_report_")
  os.environ["M2M_CACHE_DIR"] = os.path.join(_TMP.name, "cache")


def tearDownModule():
  _TMP.cleanup()


def _results(out):
  with open(os.path.join(out, "results.json")) as fh:
    return json.load(fh)


def _history(out):
  """history.csv as {column: float64 array} (NaN where a cell is empty)."""
  with open(os.path.join(out, "history.csv")) as fh:
    rows = list(csv.DictReader(fh))
  return {k: np.array([float(r[k]) if r[k] != "" else np.nan for r in rows]) for k in rows[0]}


class _Kill(BaseException):
  """A kill at a chosen point (BaseException: no handler of the run catches it)."""


def _run(cfg, drawn, kill_in=None):
  """`run_experiment` with `report.write_report` wrapped: what each run's own report drew goes
  to drawn[run folder]; the report due in the folder `kill_in` dies as SIGKILL would."""
  write = report.write_report

  def recording(run_dir, *args, **kwargs):
    if run_dir == kill_in:
      raise _Kill()
    written = write(run_dir, *args, **kwargs)
    drawn[run_dir] = written.drawn
    return written

  with mock.patch.object(report, "write_report", side_effect=recording):
    return run.run_experiment(cfg)


def _floats(values):
  return np.array([np.nan if v is None else v for v in values], np.float64)


def _image_folder(root):
  """3 classes of 16x16 PNGs, a long tail 12/6/3, each class its own brightness."""
  rng = np.random.default_rng(1)
  for k, n in enumerate((12, 6, 3)):
    os.makedirs(os.path.join(root, f"class{k}"))
    for i in range(n):
      img = np.clip(rng.normal(60 + 70 * k, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
      tf.io.write_file(os.path.join(root, f"class{k}", f"{i}.png"), tf.io.encode_png(img))


class _ReportChecks:
  """Checks shared by both runs; `self.out` is the M2m run, `self.g_out` its g_erm run."""

  def _assert_files(self, out, keys):
    names = sorted(os.listdir(os.path.join(out, report.FIGURES_DIR)))
    self.assertEqual(names, sorted(report.FIGURES[k] for k in keys))  # no temporary file left
    with open(os.path.join(out, report.REPORT_FILE)) as fh:
      md = fh.read()
    for k in keys:
      with Image.open(os.path.join(out, report.FIGURES_DIR, report.FIGURES[k])) as im:
        self.assertEqual(im.format, "PNG")
      self.assertIn(f"]({report.FIGURES_DIR}/{report.FIGURES[k]})", md)
    return md

  def _assert_values(self, out, drawn, m2m):
    """Every figure's drawn values against results.json and history.csv."""
    res, h = _results(out), _history(out)
    x = h["epoch"] + 1
    curves = drawn["curves"]
    self.assertAllEqual(curves["training loss"]["loss"], np.stack([x, h["loss"]], 1))
    self.assertAllEqual(curves["learning rate"]["lr"], np.stack([x, h["lr"]], 1))
    bacc = curves["balanced accuracy"]
    self.assertAllEqual(bacc["val bACC"], np.stack([x, h["val_bacc"]], 1))
    has_test = ~np.isnan(h["test_bacc"])  # points where the epoch was tested
    self.assertAllEqual(bacc["test bACC"], np.stack([x, h["test_bacc"]], 1)[has_test])
    self.assertIn(h["test_bacc"][res["best_epoch"]], bacc["test bACC"][:, 1])
    flags = read_json(os.path.join(out, "flags.json"))
    phase = [flags["schedule"]["deferred_epoch"] + 0.5] if m2m else []
    self.assertEqual(curves["marks"], phase + [res["best_epoch"] + 1])
    order = np.argsort(-np.array(res["class_counts"]), kind="stable")
    recall = drawn["recall"]
    self.assertAllEqual(recall["order"], order)
    for split in ("val", "test"):
      self.assertAllEqual(recall[split], _floats(res[split]["per_class_recall"])[order])
    self.assertEqual(recall["ticks"], [f"{res['class_names'][k]}\n{res['class_counts'][k]}"
                                       for k in order])
    cm = np.array(res["test"]["confusion_matrix"])[np.ix_(order, order)]
    self.assertAllEqual(drawn["confusion"]["counts"], cm)
    self.assertAllClose(drawn["confusion"]["percent"], 100 * cm / cm.sum(1, keepdims=True))
    self.assertAllClose(np.diag(drawn["confusion"]["percent"]),
                        _floats(res["per_class_recall"])[order])
    self.assertAllEqual(drawn["cumulative_fp"]["test"], res["test"]["cumulative_fp"])
    self.assertEqual(drawn["cumulative_fp"]["ticks"], [res["class_names"][k] for k in order])
    if m2m:
      rates = drawn["m2m_rates"]["M2m rates per epoch"]
      for col, label in report.M2M_RATES:
        self.assertAllEqual(rates[label], np.stack([x, h[col]], 1))
    else:
      self.assertNotIn("m2m_rates", drawn)

  def _assert_headline(self, out, md):
    res = _results(out)
    for key in ("test_bacc", "test_gm", "val_bacc", "val_gm"):
      self.assertIn(f" {res[key]:.2f} |", md)
    self.assertIn(f"- Selected epoch: {res['best_epoch'] + 1} of 2,", md)
    zero = [n for n, v in zip(res["class_names"], res["per_class_recall"]) if v == 0]
    self.assertEqual(len(zero), res["n_zero_recall"])
    self.assertIn(f"- Classes with zero test recall: {len(zero)} of {len(res['class_names'])}",
                  md)
    for name in zero:
      self.assertIn(name, md.split("zero test recall")[1].split("\n")[0])

  def test_values_of_both_reports(self):
    for out, m2m in ((self.out, True), (self.g_out, False)):
      self._assert_values(out, self.drawn[out], m2m)  # what the run's own report drew


class ReutersReportTest(_ReportChecks, tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.out = os.path.join(_TMP.name, "reuters_m2m")
    cls.g_out = os.path.join(cls.out, "g_erm")
    cls.drawn = {}
    cfg = ExperimentConfig.from_leaves(
        dataset="reuters", method="m2m", seed=0, output_dir=cls.out, epochs=2, deferred_epoch=1,
        verbose=0, jit_compile="false", n_buckets=2, export=False)
    cls.killed = False
    try:  # killed after its last epoch, when its report is due (before results.json)
      _run(cfg, cls.drawn, kill_in=cls.out)
    except _Kill:
      cls.killed = True
    cls.entries_when_killed = sorted(os.listdir(cls.out))
    cls.results = _run(cfg, cls.drawn)  # the same command: resumes, and ends

  def test_report_comes_when_the_resumed_run_ends(self):
    self.assertTrue(self.killed)
    self.assertIn("ckpt", self.entries_when_killed)  # unfinished: killed before its last file
    for name in (report.REPORT_FILE, report.FIGURES_DIR, "results.json"):
      self.assertNotIn(name, self.entries_when_killed)
    md = self._assert_files(self.out, ["curves", "recall", "confusion", "cumulative_fp",
                                       "m2m_rates"])
    self._assert_headline(self.out, md)
    self.assertIn("reuters, ce-m2m, seed 0, phase 2 from epoch 2.", md)
    g_md = self._assert_files(self.g_out, ["curves", "recall", "confusion", "cumulative_fp"])
    self.assertNotIn("phase 2", g_md)

  def test_class_names_are_the_runs(self):
    res = _results(self.out)
    self.assertIn("earn", res["class_names"])
    ticks = self.drawn[self.out]["cumulative_fp"]["ticks"]
    self.assertEqual(ticks[:2], ["earn", "acq"])  # largest first

  def test_figures_at_the_end_equal_those_on_demand(self):
    before = {}
    for name in os.listdir(os.path.join(self.out, report.FIGURES_DIR)):
      with open(os.path.join(self.out, report.FIGURES_DIR, name), "rb") as fh:
        before[name] = fh.read()
    self.assertEqual(cli.main([self.out]), 0)
    for name, data in before.items():
      with open(os.path.join(self.out, report.FIGURES_DIR, name), "rb") as fh:
        self.assertEqual(fh.read(), data, name)

  def test_unfinished_run_is_refused_in_one_line(self):
    folder = os.path.join(_TMP.name, "unfinished")
    os.makedirs(folder)
    self.assertEqual(cli.main([folder]), 1)
    with self.assertRaisesRegex(FileNotFoundError, "unfinished"):
      report.write_report(folder)


class ImageFolderReportTest(_ReportChecks, tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = os.path.join(_TMP.name, "images")
    _image_folder(root)
    cls.out = os.path.join(_TMP.name, "folder_m2m")
    cls.g_out = os.path.join(cls.out, "g_erm")
    cls.drawn = {}
    _run(ExperimentConfig.from_leaves(
        dataset=f"folder:{root}", method="m2m", epochs=2, output_dir=cls.out, verbose=0,
        jit_compile="false", n_buckets=1, export=False), cls.drawn)

  def test_every_file(self):
    md = self._assert_files(self.out, list(report.FIGURES))
    self._assert_headline(self.out, md)
    self._assert_files(self.g_out, ["curves", "recall", "confusion", "cumulative_fp"])

  def test_translation_grid_shows_gs_confidence(self):
    drawn = self.drawn[self.out]["translations"]  # drawn by the run with its g and best f
    models = cli.load_models(self.out)  # the same g and data, rebuilt as the command does
    res = _results(self.out)
    ex = drawn["examples"]
    self.assertEqual((ex["major"], ex["targets"]), (0, [2, 1]))  # seeds: the largest class
    data = models.data
    train = pipeline.to_model_input(tf.constant(data.x_train[data.y_train == 0])).numpy()
    for seed in drawn["seeds"]:  # each seed image is a training image of the seed class
      self.assertTrue(np.any(np.all(train == seed, axis=(1, 2, 3))))
    self.assertAllEqual(drawn["translations"], ex["x_star"])
    self.assertTrue(np.all((ex["x_star"] >= 0) & (ex["x_star"] <= 1)))
    for i, t in enumerate(ex["targets"]):
      # g's softmax at the drawn x* is the probability in the panel's title.
      p = tf.nn.softmax(models.g(drawn["translations"][i], training=False)).numpy()[:, t]
      for j, title in enumerate(drawn["titles"][i]):
        self.assertTrue(title.startswith(f"-> {res['class_names'][t]}"), title)
        shown = float(re.search(r"-> ([0-9.]+)$", title).group(1))
        self.assertAllClose(shown, p[j], atol=0.0051)
        self.assertEqual("(accepted)" in title, p[j] >= models.m2m.gamma)

  def test_plots_order_classes_by_training_count(self):
    self.assertAllEqual(plots.count_order([3, 12, 6, 12]), [1, 3, 2, 0])


if __name__ == "__main__":
  tf.test.main()
