"""launch/cifar/report.py on small fake run folders: table rows, Markdown, figures, CLI.

The run folders are written by hand (results.json, history.csv, flags.json,
ckpt/state-NNNN.json) with small numbers; the model figures use a random
ResNet-32 and a 10-class fake dataset of a few hundred 32x32 images.
"""

import json
import math
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import pandas as pd
from PIL import Image

from data_prep.splits import DatasetSplits
from launch.cifar import figures as cifar_figures
from launch.cifar import report as cifar_report
from launch.cifar import runs as cifar_runs
from m2m_tf import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = cifar_runs.CIFAR10_CLASSES
COUNTS = [50, 40, 30, 20, 15, 10, 8, 6, 5, 4]
FLAGS = {"epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "warmup_epochs": 5,
         "lr_milestones": [160, 180], "lr_factors": [0.01, 0.01], "weight_decay": 2e-4,
         "deferred_epoch": 160, "start_noise": 0.5, "init_epoch": None}


def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as fh:
    if isinstance(obj, str):
      fh.write(obj)
    else:
      json.dump(obj, fh)


def _history(epochs, m2m=False):
  df = pd.DataFrame({"epoch": np.arange(epochs), "loss": np.linspace(2, 1, epochs),
                     "lr": 0.1, "val_bacc": np.linspace(20, 40, epochs),
                     "test_bacc": np.linspace(21, 41, epochs)})
  if m2m:
    df["m2m_accept_rate"] = np.where(df["epoch"] >= 160, 0.3, np.nan)
  return df


def _finished_erm(root, with_weights):
  """A finished ERM folder; with_weights: a random ResNet-32's best_f.weights.h5."""
  d = os.path.join(root, "erm_s0")
  recall = [90.0, 80.0, 70.0, 60.0, 50.0, 40.0, 30.0, 20.0, 10.0, 0.0]
  _write(os.path.join(d, "results.json"), {
      "test_bacc": 45.0, "test_gm": 12.5, "val_bacc": 47.5, "best_epoch": 190,
      "per_class_recall": recall, "class_counts": COUNTS, "class_names": list(NAMES),
      "seconds": 7200.0, "test": {"cumulative_fp": list(range(10, 110, 10))}})
  _write(os.path.join(d, "flags.json"), FLAGS)
  _write(os.path.join(d, "history.csv"), _history(200).to_csv(index=False))
  if with_weights:
    models.build_model("resnet32", (32, 32, 3), 10, name="f").save_weights(
        os.path.join(d, "best_f.weights.h5"))


def _unfinished_m2m(root):
  """An M2m run branched after 160 epochs in PyTorch's momentum form, 3 of its own epochs
  committed, and its source: ERM's phase-1 run in Keras' form, 162 epochs at 90 s."""
  _write(os.path.join(root, "erm_phase1_s0", "flags.json"), FLAGS)
  _write(os.path.join(root, "erm_phase1_s0", "ckpt", "state-0162.json"),
         {"epochs_done": 162, "epoch_seconds": [90.0] * 162})
  d = os.path.join(root, "m2m_s0")
  hist = _history(163, m2m=True)
  # init_from as the launcher writes it (relative to where it ran): read under the report's root.
  _write(os.path.join(d, "flags.json"), dict(
      FLAGS, init_epoch=160, method="m2m", momentum_form="pytorch",
      init_from="results/cifar10_jpeg_lt_full/erm_phase1_s0"))
  _write(os.path.join(d, "history.csv"), hist.to_csv(index=False))
  _write(os.path.join(d, "ckpt", "state-0163.json"), {
      "epochs_done": 163, "history": hist.to_dict("records"),
      "epoch_seconds": [100.0] * 160 + [600.0] * 3})


def _fake_data(n_test_per_class=12, seed=0):
  rng = np.random.default_rng(seed)
  y_train = np.repeat(np.arange(10), COUNTS)
  y_test = np.repeat(np.arange(10), n_test_per_class)

  def img(n):
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)

  return DatasetSplits("fake", img(len(y_train)), y_train, img(10), np.arange(10),
                       img(len(y_test)), y_test, NAMES, "image", (0.0, 1.0))


def _random_g():
  return models.build_model("resnet32", (32, 32, 3), 10, name="g")


def _assert_png(test, path):
  test.assertTrue(os.path.exists(path), path)
  with Image.open(path) as im:
    test.assertEqual(im.format, "PNG")
    test.assertGreater(im.size[0] * im.size[1], 0)


def _seed0(df: pd.DataFrame) -> pd.DataFrame:
  """Seed 0's lines of the per-run table, indexed by row."""
  return df[df["seed"] == 0].set_index("stage")


class TableTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    _finished_erm(self.root, with_weights=False)
    _unfinished_m2m(self.root)
    self.runs = cifar_runs.read_runs(self.root)
    self.table = cifar_runs.table(self.runs)
    self.df = _seed0(self.table)

  def test_one_row_per_stage_and_seed_with_paper_numbers(self):
    # Each row's seeds together, rows in the plan's order.
    self.assertEqual(list(zip(self.table["stage"], self.table["seed"]))[:4],
                     [("erm", 0), ("erm", 1), ("erm", 2), ("drs", 0)])
    self.assertEqual(len(self.table), 14)  # 8 rows of seed 0, ERM/DRS/M2m of seeds 1 and 2
    # Seed 0's rows in the plan's order; the per-sample start is our ablation (no paper number).
    self.assertEqual(list(self.df.index), ["erm", "drs", "m2m_per_sample", "ldam", "ldam_drw",
                                           "ldam_m2m", "m2m", "la"])
    self.assertTrue(math.isnan(self.df.loc["m2m_per_sample", "paper_bacc"]))
    paper = {"erm": 68.7, "drs": 75.2, "m2m": 78.3, "ldam_drw": 77.1, "ldam_m2m": 79.1}
    for stage, bacc in paper.items():
      self.assertAlmostEqual(self.df.loc[stage, "paper_bacc"], bacc)

  def test_finished_row(self):
    erm = self.df.loc["erm"]
    self.assertEqual((erm["status"], erm["epochs"]), ("done", "200/200"))
    self.assertEqual((erm["test_bacc"], erm["test_gm"], erm["val_bacc"]), (45.0, 12.5, 47.5))
    self.assertEqual(erm["best_epoch"], 190)
    self.assertEqual(erm["recall_airplane"], 90.0)
    self.assertEqual(erm["recall_truck"], 0.0)
    self.assertAlmostEqual(erm["wall_hours"], 2.0)  # results.json seconds (no full record)

  def test_unfinished_row_shows_progress_not_test_numbers(self):
    m2m = self.df.loc["m2m"]
    self.assertEqual((m2m["status"], m2m["epochs"]), ("163 of 200 epochs", "163/200"))
    self.assertAlmostEqual(m2m["val_bacc"], 40.0)  # the latest epoch's
    for col in ["test_bacc", "test_gm", "best_epoch"] + [f"recall_{n}" for n in NAMES]:
      self.assertTrue(math.isnan(m2m[col]), col)
    self.assertAlmostEqual(m2m["wall_hours"], 3 * 600 / 3600)  # ERM's 160 epochs left out
    self.assertEqual(self.df.loc["drs", "status"], "not started")

  def test_files(self):
    out = tempfile.mkdtemp()
    csv_path, seeds_path, md_path = cifar_report.write_table(self.runs, out, self.root)
    self.assertEqual(len(pd.read_csv(csv_path)), 14)
    over = pd.read_csv(seeds_path).set_index("stage")
    self.assertEqual(len(over), 8)
    self.assertEqual((over.loc["erm", "seeds_done"], over.loc["erm", "seeds_planned"]), (1, 3))
    self.assertEqual(over.loc["erm", "test_bacc_mean"], 45.0)
    with open(md_path) as fh:
      md = fh.read()
    self.assertIn("**JPEG substitute (CIFAR-10 re-encoded as JPEG; not comparable to the paper to "
                  "the decimal).**", md)
    self.assertIn("Made by `python -m launch.cifar.report`", md)
    self.assertIn("beta 0.999, lambda 0.5, gamma 0.9, step size 0.1, T = 10", md)
    self.assertIn("no hyper-parameter grid", md)
    self.assertIn("SGD with momentum 0.9, lr 0.1 with 5 warm-up epochs", md)
    self.assertIn("momentum form: ERM: Keras' form (lr inside the buffer); ERM-M2m: Keras' form "
                  "(lr inside the buffer) in the shared first 160 epochs, PyTorch's form (the "
                  "official code's) from epoch 161", md)
    self.assertIn("of the shared first 160 epochs, ERM's (seed 0) took 4.0 h.", md)  # 160 x 90 s
    _write(os.path.join(self.root, "ldam_phase1_s0", "ckpt", "state-0020.json"),
           {"epochs_done": 20, "epoch_seconds": [180.0] * 20})
    self.assertIn("ERM's (seed 0) took 4.0 h, LDAM's (seed 0) took 1.0 h so far (20 of them).",
                  cifar_report.markdown(self.table, self.runs, self.root))
    # The fake history's best validation epoch is its last (199: test bACC 41, no test GM).
    self.assertIn("| ERM | ce | none | 0 | 200/200 | done | 45.0 | 12.5 |  | 47.5 | 190 | "
                  "199: 41.0 / n/a | 68.7 /", md)
    self.assertIn("| 163/200 | 163 of 200 epochs | n/a | n/a |  | 40.0 (latest) |  |  | 78.3 /",
                  md)

  def test_posthoc_column_reads_the_runs_posthoc_file(self):
    self.assertTrue(math.isnan(self.df.loc["erm", "posthoc_tau"]))  # not adjusted yet
    _write(os.path.join(self.root, "erm_s0", "posthoc_la.json"),
           {"tau": 1.75, "test_bacc": 51.25, "test_gm": 30.5})
    _write(os.path.join(self.root, "m2m_s0", "posthoc_la.json"),  # unfinished: not read
           {"tau": 1.0, "test_bacc": 99.0, "test_gm": 99.0})
    df = cifar_runs.table(cifar_runs.read_runs(self.root))
    erm, m2m = (_seed0(df).loc[k] for k in ("erm", "m2m"))
    self.assertEqual((erm["posthoc_tau"], erm["posthoc_test_bacc"], erm["posthoc_test_gm"]),
                     (1.75, 51.25, 30.5))
    self.assertTrue(math.isnan(m2m["posthoc_test_bacc"]))
    md = cifar_report.markdown(df, self.runs, self.root)
    self.assertIn("| 45.0 | 12.5 | 51.2 / 30.5 (1.75) | 47.5 |", md)

  def test_official_tie_rule_takes_the_last_best_epoch(self):
    hist = _history(200)
    hist["val_bacc"] = 30.0
    hist.loc[[150, 180], "val_bacc"] = 50.0  # a tie: ours keeps 150, the official code 180
    hist["test_gm"] = hist["test_bacc"] - 10.0
    _write(os.path.join(self.root, "erm_s0", "history.csv"), hist.to_csv(index=False))
    erm = _seed0(cifar_runs.table(cifar_runs.read_runs(self.root))).loc["erm"]
    self.assertEqual(erm["best_epoch_last_tie"], 180)
    self.assertAlmostEqual(erm["test_bacc_last_tie"], hist["test_bacc"][180])
    self.assertAlmostEqual(erm["test_gm_last_tie"], hist["test_bacc"][180] - 10.0)
    md = cifar_report.markdown(cifar_runs.table(cifar_runs.read_runs(self.root)),
                               self.runs, self.root)
    t180 = hist["test_bacc"][180]
    self.assertIn(f"| 190 | 180: {t180:.1f} / {t180 - 10:.1f} |", md)
    # Unfinished rows have no selected epoch under either rule.
    self.assertTrue(math.isnan(self.df.loc["m2m", "best_epoch_last_tie"]))

  def test_machines_count_a_rows_own_epochs(self):
    record = {"epochs_done": 164, "epoch_seconds": [1.0] * 164,
              "epoch_machines": [None] * 161 + ["AMD, 2 cores", "Intel, 2 cores", "Intel, 2 cores"]}
    got = cifar_runs._machines(None, record, {"init_epoch": 160})
    self.assertEqual(got, {"not recorded": 1, "AMD, 2 cores": 1, "Intel, 2 cores": 2})
    # A record from before the field: every own epoch "not recorded".
    old = {"epochs_done": 170, "epoch_seconds": [1.0] * 170}
    self.assertEqual(cifar_runs._machines(None, old, {"init_epoch": 160}), {"not recorded": 10})
    run = cifar_runs.Run("drs", "ce", "drs", "x", seed=2, machines=got)
    self.assertIn("ERM-DRS s2: not recorded (1), AMD, 2 cores (1), Intel, 2 cores (2)",
                  cifar_runs.machines_text([run]))

  def test_cli(self):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "launch.cifar.report"]
    proc = subprocess.run(cmd + ["--help"], cwd=ROOT, env=env, capture_output=True, text=True)
    self.assertEqual(proc.returncode, 0, proc.stderr)
    self.assertIn("--skip_figures", proc.stdout)
    out = tempfile.mkdtemp()
    proc = subprocess.run(cmd + [f"--root={self.root}", f"--results_dir={out}", "--skip_figures"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    self.assertEqual(proc.returncode, 0, proc.stderr)
    self.assertEqual(sorted(os.listdir(out)), ["cifar10_jpeg_lt.csv", "cifar10_jpeg_lt.md",
                                           "cifar10_jpeg_lt_seeds.csv"])


class FigureTest(absltest.TestCase):

  def test_all_figures(self):
    root, figs = tempfile.mkdtemp(), tempfile.mkdtemp()
    _finished_erm(root, with_weights=True)
    _unfinished_m2m(root)
    runs = cifar_runs.read_runs(root)
    self.assertEqual(cifar_figures.translation_f(runs).stage, "erm")  # M2m is unfinished
    written = cifar_figures.make_figures(runs, figs, load_data=_fake_data, load_g=_random_g)
    self.assertEqual(sorted(written), sorted(cifar_figures.FIGURES))
    for key, name in cifar_figures.FIGURES.items():
      self.assertEqual(written[key], os.path.join(figs, name))
      _assert_png(self, written[key])

  def test_translations_clip_and_probabilities(self):
    data = _fake_data()
    f = models.build_model("resnet32", (32, 32, 3), 10, name="f")
    ex = cifar_figures.translate_examples(_random_g(), f, data, n_seeds=2, n_targets=2)
    self.assertEqual(ex["major"], 0)
    self.assertEqual(ex["targets"], [9, 8])  # smallest classes first
    self.assertEqual(ex["x_star"].shape, (2, 2, 32, 32, 3))
    self.assertTrue(np.all((ex["x_star"] >= 0) & (ex["x_star"] <= 1)))
    self.assertTrue(np.all((ex["p_after"] >= 0) & (ex["p_after"] <= 1)))

  def test_missing_runs_skip_their_figures(self):
    root, figs = tempfile.mkdtemp(), tempfile.mkdtemp()
    _unfinished_m2m(root)  # no ERM, no finished run, no weights

    def no_data():
      raise AssertionError("data loaded without a model figure to make")

    written = cifar_figures.make_figures(cifar_runs.read_runs(root), figs, load_data=no_data,
                                        load_g=no_data)
    self.assertEqual(list(written), ["curves"])
    self.assertEqual(os.listdir(figs), [cifar_figures.FIGURES["curves"]])
    _assert_png(self, written["curves"])
    empty = cifar_runs.read_runs(tempfile.mkdtemp())
    self.assertEqual(cifar_figures.make_figures(empty, figs, load_data=no_data, load_g=no_data), {})

  def test_missing_g_skips_translations(self):
    root, figs = tempfile.mkdtemp(), tempfile.mkdtemp()
    _finished_erm(root, with_weights=True)
    self.assertIsNone(cifar_figures.load_official_g(os.path.join(root, "no_such_g.npz")))
    written = cifar_figures.make_figures(cifar_runs.read_runs(root), figs,
                                        load_data=lambda: _fake_data(4), load_g=lambda: None)
    self.assertNotIn("translations", written)
    self.assertIn("embedding", written)


  def test_predictions_then_table_verdicts(self):
    root, out = tempfile.mkdtemp(), tempfile.mkdtemp()
    _finished_erm(root, with_weights=True)
    _unfinished_m2m(root)
    runs = cifar_runs.read_runs(root)
    data = _fake_data(4)
    path = cifar_report.make_predictions(runs, out, lambda: data)
    with np.load(path) as z:
      # Finished runs only, by run key.
      self.assertEqual(sorted(z.files), ["erm_s0", "erm_s0_sha256", "y_test"])
      self.assertEqual(len(z["erm_s0"]), len(data.y_test))
    _, _, md_path = cifar_report.write_table(runs, out, root)
    with open(md_path) as fh:
      md = fh.read()
    self.assertIn("Seed 0, paired differences on the test images", md)
    self.assertIn("- ERM-M2m - ERM: n/a (ERM-M2m not finished)", md)
    self.assertIn("Paired over seeds", md)
    self.assertIn("- ERM-M2m - ERM: n/a (0 shared finished seeds)", md)
    # No finished row with weights: no model is built and no data read.
    self.assertIsNone(cifar_report.make_predictions(cifar_runs.read_runs(tempfile.mkdtemp()),
                                                    out, load_data=None))


if __name__ == "__main__":
  absltest.main()
