"""launch/: a tiny grid and hyper-parameter selection run end to end, resume, and make their tables.

Grids and selections narrower than the committed ones must never overwrite
results/ (they go to <results_dir>/partial/); every launch command answers --help.
"""

import json
import os
import subprocess
import sys
import tempfile

import pytest
from absl.testing import absltest
import numpy as np
import pandas as pd
from scipy import stats

from launch import budgets
from launch import over_seeds
from launch import readme
from launch import runner
from launch import store
from launch import tables
from m2m_tf import markdown
from m2m_tf import run_records
from m2m_tf.config import ExperimentConfig
from data_prep.registry import get_recipe
from m2m_tf.training import output_dir
from m2m_tf.training.methods import METHODS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXTRA = "--extra=epochs=3,deferred_epoch=1,warmup_epochs=1"


def _run(args, env):
  proc = subprocess.run([sys.executable, "-m"] + args, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return proc.stdout


def _fake_run(root, name, seed, rng):
  """A finished run folder: only the results.json fields and history the collectors read."""
  os.makedirs(os.path.join(root, name), exist_ok=True)
  bacc = float(rng.uniform(50, 70))
  with open(os.path.join(root, name, "results.json"), "w") as fh:
    json.dump({"loss": "ce", "rebalancing": "none", "seed": seed, "test_bacc": bacc,
               "test_gm": bacc - 5, "n_zero_recall": 0, "val_bacc": bacc + 1, "val_gm": bacc - 4,
               "test": {}, "best_epoch": 1, "seconds": 1.0}, fh)
  with open(os.path.join(root, name, "history.csv"), "w") as fh:
    fh.write(f"epoch,val_bacc\n0,{bacc}\n")
  with open(os.path.join(root, name, "flags.json"), "w") as fh:
    json.dump({"seed": seed}, fh)


def _fake_posthoc(run_dir, rng, *, tau=None, val=None, test=None, raw_test=None, mode="select"):
  """A run's posthoc_la.json with the fields the table reads; by default tau is the validation
  choice of its curve (the smallest tau with the best validation bACC)."""
  grid = [0.0, 0.5, 1.0]
  val = list(val or rng.uniform(60, 70, size=3))
  best = max(val)
  tau = min(t for t, v in zip(grid, val) if v == best) if tau is None else tau
  test = float(rng.uniform(50, 70)) if test is None else test
  raw_test = float(rng.uniform(50, 70)) if raw_test is None else raw_test
  summary = {"bacc": test, "gm": test - 5, "n_zero_recall": 1, "per_class_recall": [90.0, 0.0],
             "major_acc": 90.0, "minor_acc": 0.0}
  with open(os.path.join(run_dir, "posthoc_la.json"), "w") as fh:
    json.dump({"mode": mode, "tau": tau, "grid": grid, "grid_val_bacc": val,
               "val_bacc": val[grid.index(tau)], "val_gm": 1.0, "test_bacc": test,
               "test_gm": test - 5, "test": summary, "val_raw": {"bacc": val[0]},
               "test_raw": {"bacc": raw_test}, "class_names": ["big", "small"],
               "seconds": 2.0}, fh)


def _read(path):
  with open(path) as fh:
    return fh.read()


def _read_bytes(path):
  with open(path, "rb") as fh:
    return fh.read()


class PlanTest(absltest.TestCase):

  def test_ablation_rows_are_the_papers(self):
    root = tempfile.mkdtemp()
    jobs = runner.plan("reuters", {k: tables.ABLATION_ROWS[k] for k in ("m2m_rs", "m2m_rs_rand",
                                                                         "m2m_ensemble")},
                       [3], root, [], None)
    cmds = {os.path.basename(out): cmd for _, out, cmd in jobs}
    # RS-Rand is M2m-RS (phase 2 from epoch 0) with random labels (paper section 3.4).
    self.assertIn("--deferred_epoch=0", cmds["m2m_rs_rand_s3"])
    self.assertIn("--accept_mode=random_label", cmds["m2m_rs_rand_s3"])
    self.assertIn("--deferred_epoch=0", cmds["m2m_rs_s3"])
    self.assertNotIn("--accept_mode=random_label", cmds["m2m_rs_s3"])
    # g: ERM seeds 1003 (and 1103 for the ensemble), planned first; never erm_s3.
    g = [a for a in cmds["m2m_ensemble_s3"] if a.startswith("--g_checkpoint=")][0]
    self.assertEqual(g, "--g_checkpoint=" + ",".join(
        os.path.join(root, f"erm_s{s}", "best_f.weights.h5") for s in (1003, 1103)))
    self.assertEqual([os.path.basename(out) for stage, out, _ in jobs if stage == 0],
                     ["erm_s1003", "erm_s1103"])


class StoreTest(absltest.TestCase):

  def test_save_then_restore_on_a_fresh_machine(self):
    tmp = tempfile.mkdtemp()
    runs, st, fresh = (os.path.join(tmp, d) for d in ("runs", "store", "fresh"))
    rng = np.random.default_rng(0)
    _fake_run(os.path.join(runs, "tune", "ds", "erm"), "lr0.1_s0", 0, rng)
    _fake_run(os.path.join(runs, "grid", "ds"), "m2m_s0", 0, rng)
    for name, size in (("erm_s1000", 1000), ("erm_vocab_size5000_s1000", store.MAX_G_BYTES + 1)):
      _fake_run(os.path.join(runs, "grid", "ds"), name, 1000, rng)
      with open(os.path.join(runs, "grid", "ds", name, run_records.BEST_WEIGHTS_FILE), "wb") as fh:
        fh.write(rng.bytes(size))
    os.makedirs(os.path.join(runs, "grid", "ds", "drs_s0"))  # unfinished: not stored
    self.assertEqual(store.save(runs, "ds", st), 4)
    first = _read_bytes(os.path.join(st, "ds.jsonl.gz"))
    store.save(runs, "ds", st)
    self.assertEqual(_read_bytes(os.path.join(st, "ds.jsonl.gz")), first)  # same runs, same bytes
    done = store.restore(fresh, "ds", st)
    # The large g is not kept: the grid trains it again.
    self.assertEqual(sorted(done), [os.path.join("grid", "ds", "erm_s1000"),
                                    os.path.join("grid", "ds", "m2m_s0"),
                                    os.path.join("tune", "ds", "erm", "lr0.1_s0")])
    for rel in done:
      for name in store.FILES:
        self.assertEqual(_read(os.path.join(fresh, rel, name)),
                         _read(os.path.join(runs, rel, name)))
    g = os.path.join("grid", "ds", "erm_s1000", run_records.BEST_WEIGHTS_FILE)
    self.assertEqual(_read_bytes(os.path.join(fresh, g)), _read_bytes(os.path.join(runs, g)))
    self.assertEqual(store.restore(fresh, "ds", st), [])  # nothing missing any more
    self.assertEqual(store.restore(fresh, "other", st), [])  # no store for that dataset
    # Saving from the fresh machine keeps the large g it could not restore (same bytes).
    self.assertEqual(store.save(fresh, "ds", st), 4)
    self.assertEqual(_read_bytes(os.path.join(st, "ds.jsonl.gz")), first)


class MomentumFormNoteTest(absltest.TestCase):

  def test_the_form_the_runs_recorded(self):
    root = tempfile.mkdtemp()
    for run, flags in (("erm_s0", {"schedule": {"momentum_form": "pytorch"}}),  # nested record
                       ("erm_s1", {"momentum_form": "pytorch"}),  # flat record
                       ("erm_s2", {"lr": 0.1}),  # recorded before the field: Keras' form
                       ("erm_s3", None)):  # no flags.json
      os.makedirs(os.path.join(root, run))
      if flags is not None:
        with open(os.path.join(root, run, "flags.json"), "w") as fh:
          json.dump(flags, fh)
    counts = tables.momentum_forms(root, ["erm_s0", "erm_s1", "erm_s2", "erm_s3"])
    self.assertEqual(counts, {"pytorch": 2, "keras": 2})
    self.assertStartsWith(tables.momentum_form_note(counts), "SGD momentum in Keras' form (lr "
                          "inside the buffer) in 2 runs, PyTorch's form (the official code's) in "
                          "2 runs;")
    self.assertStartsWith(tables.momentum_form_note(tables.momentum_forms(root, ["erm_s0"])),
                          "SGD momentum in PyTorch's form (the official code's);")
    self.assertStartsWith(tables.momentum_form_note({}), "SGD momentum in Keras' form")


class MarkdownTableTest(absltest.TestCase):

  def test_pipe_table(self):
    self.assertEqual(markdown.markdown_table(["a", "b c"], [[1, "x"], [2.5, ""]]),
                     "| a | b c |\n|---|---|\n| 1 | x |\n| 2.5 |  |")
    self.assertEqual(markdown.markdown_table(["only"], []), "| only |\n|---|")

  def test_a_pipe_in_a_cell_is_escaped(self):
    table = markdown.markdown_table(["name"], [["a|b"]])
    self.assertEqual(table.splitlines()[2], "| a\\|b |")

  def test_row_of_another_width_is_refused(self):
    with self.assertRaisesRegex(ValueError, "row 1 has 1 cells, the header 2"):
      markdown.markdown_table(["a", "b"], [[1, 2], [3]])


class ZeroRecallTest(absltest.TestCase):

  def test_names_and_summary(self):
    r = {"class_names": ["earn", "zinc", "gas"], "per_class_recall": [90.0, 0.0, 0.0]}
    self.assertEqual(tables.zero_recall_names(r), ["zinc", "gas"])
    self.assertEqual(tables.zero_recall_names({"per_class_recall": [0.0, 5.0]}), ["0"])
    df = pd.DataFrame({"zero_recall_classes": ["zinc;gas", "zinc", ""]})
    self.assertEqual(tables._zero_recall_summary(df), "zinc 2/3, gas 1/3")


class LaunchTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.env = dict(os.environ, M2M_CACHE_DIR=os.path.join(cls.tmp, "cache"),
                   TF_CPP_MIN_LOG_LEVEL="2")

  def _partial_selection(self, res, grid_root):
    """A 2-setting M2m selection (trains ERM g and 2 M2m runs); returns its JSON record."""
    out = _run(["launch.tune", "--dataset=synthetic_lt", "--rows=m2m", "--first_settings=2",
                f"--root={self.tmp}/hp", f"--grid_root={grid_root}", f"--results_dir={res}",
                EXTRA], self.env)
    self.assertIn("Partial selection (--rows m2m (default erm,rs,", out.splitlines()[-1])
    self.assertIn("--first_settings=2 of 18", out.splitlines()[-1])
    self.assertFalse(os.path.exists(os.path.join(res, "budgets_synthetic_lt.json")))
    with open(os.path.join(res, tables.PARTIAL_DIR, "budgets_synthetic_lt.json")) as fh:
      hp = json.load(fh)
    self.assertFalse(hp["complete"])
    self.assertLen(hp["grid"], 2)
    best = max(hp["grid"], key=lambda r: r["val_bacc"])
    self.assertEqual(hp["selected"]["m2m"], json.loads(best["setting"]))
    self.assertNotIn("test_bacc", json.dumps(hp))  # selection never sees test metrics
    return hp

  @pytest.mark.slow
  def test_selection_then_grid_then_resume(self):
    res = os.path.join(self.tmp, "results")
    partial = os.path.join(res, tables.PARTIAL_DIR)
    grid_root = os.path.join(self.tmp, "grid")
    hp = self._partial_selection(res, grid_root)
    grid = ["launch.grid", "--dataset=synthetic_lt", "--rows=erm,drs,m2m,erm_posthoc_la",
            "--seeds=0,1",
            f"--root={grid_root}", f"--results_dir={res}",
            f"--budgets={partial}/budgets_synthetic_lt.json", EXTRA]
    out = _run(grid, self.env)
    self.assertIn("Settings selected with equal budgets from", out)
    self.assertIn("Partial grid (11 of 15 rows left out; seeds 2,3,4 of 0,1,2,3,4 left out; "
                  "settings from a partial selection)", out.splitlines()[-1])
    self.assertIn("2 post-hoc adjustments to do", out)
    self.assertFalse(os.path.exists(os.path.join(res, "synthetic_lt.csv")))
    df = pd.read_csv(os.path.join(partial, "synthetic_lt.csv"))
    for col in ("loss", "rebalancing", "seed", "test_bacc", "test_gm", "n_zero_recall",
                "val_bacc", "seconds"):
      self.assertIn(col, df.columns)
    self.assertEqual(sorted(df["row"].unique()), ["drs", "erm", "erm_posthoc_la", "m2m"])
    self.assertLen(df, 8)
    self.assertEqual(set(df["rebalancing"]), {"none", "drs", "m2m"})
    # The post-hoc row: the ERM runs adjusted at the tau their validation chose, no training.
    self.assertFalse(os.path.exists(os.path.join(grid_root, "erm_posthoc_la_s0")))
    post = df[df["row"] == "erm_posthoc_la"].set_index("seed")
    for seed in (0, 1):
      with open(os.path.join(grid_root, f"erm_s{seed}", "posthoc_la.json")) as fh:
        record = json.load(fh)
      self.assertEqual(record["mode"], "select")
      self.assertEqual(post.loc[seed, "posthoc_tau"], record["tau"])
      self.assertAlmostEqual(post.loc[seed, "test_bacc"], record["test_bacc"])
      self.assertAlmostEqual(post.loc[seed, "raw_test_bacc"],
                             df[(df["row"] == "erm") & (df["seed"] == seed)].test_bacc.item())
    with open(os.path.join(grid_root, "m2m_s0", "flags.json")) as fh:
      flags = run_records.flatten_record(json.load(fh))
    self.assertEqual(flags["beta"], hp["selected"]["m2m"]["beta"])
    # g is the ERM run of seed 1000, not f's own ERM twin erm_s0 (independent of f).
    self.assertTrue(flags["g_checkpoint"].endswith(os.path.join("erm_s1000", "best_f.weights.h5")))
    self.assertTrue(os.path.exists(os.path.join(grid_root, "erm_s1000", "results.json")))
    md = _read(os.path.join(partial, "synthetic_lt.md"))
    self.assertIn("ERM-M2m", md)
    self.assertIn("±", md)
    self.assertIn("(partial)", md.splitlines()[0])
    # The audit trail: per-class recall in the table CSV, every epoch in the history CSV.
    self.assertIn("recall_class_0", df.columns)
    hist = pd.read_csv(os.path.join(partial, "synthetic_lt_history.csv"))
    self.assertEqual(len(hist), 6 * 3)  # 6 trained runs x 3 epochs (post-hoc: ERM's epochs)
    self.assertEqual(set(hist["row"]), {"erm", "drs", "m2m"})
    # A second invocation finds every run finished and redoes none.
    out = _run(grid, self.env)
    self.assertIn("0 runs to do", out)
    self.assertIn("0 post-hoc adjustments to do", out)

  @pytest.mark.slow
  def test_grid_writes_the_committed_table_only_when_complete(self):
    root, res = os.path.join(self.tmp, "fake_grid"), os.path.join(self.tmp, "fake_results")
    rng = np.random.default_rng(0)
    for row in budgets.TUNED_ROWS:  # every trained row; the post-hoc row adjusts ERM's runs
      for seed in tables.CANONICAL_SEEDS:
        _fake_run(root, f"{row}_s{seed}", seed, rng)
        if row == "erm":
          _fake_posthoc(os.path.join(root, f"erm_s{seed}"), rng)
    os.remove(os.path.join(root, "ldam_m2m_s2", "results.json"))
    collect = ["launch.grid", "--dataset=reuters", f"--root={root}", f"--results_dir={res}",
               f"--budgets={self.tmp}/none.json"]
    last = _run(collect + ["--collect_only"], self.env).splitlines()[-1]
    self.assertEqual(last, f"Partial grid (1 of 75 runs unfinished (e.g. ldam_m2m_s2)): wrote "
                     f"{res}/partial/reuters.{{csv,md}}; {res}/reuters.{{csv,md}} left unchanged.")
    self.assertFalse(os.path.exists(os.path.join(res, "reuters.md")))
    _fake_run(root, "ldam_m2m_s2", 2, rng)
    last = _run(collect + ["--collect_only"], self.env).splitlines()[-1]
    self.assertEqual(last, f"Complete grid: wrote {res}/reuters.{{csv,md}}.")
    self.assertLen(pd.read_csv(os.path.join(res, "reuters.csv")), 75)
    # The table names the command that makes it again, non-default folders included.
    self.assertIn(f"Made by `python -m launch.grid --dataset=reuters --table=table2 --root={root} "
                  f"--budgets={self.tmp}/none.json` (seeds 0,1,2,3,4).",
                  _read(os.path.join(res, "reuters.md")))
    committed = {ext: _read(os.path.join(res, f"reuters.{ext}")) for ext in ("csv", "md")}
    # One row, one seed: nothing to train, and results/ stays as it was.
    out = _run(collect + ["--rows=erm", "--seeds=0"], self.env)
    self.assertIn("0 runs to do", out)
    self.assertIn("Partial grid (14 of 15 rows left out; seeds 1,2,3,4 of 0,1,2,3,4 left out)",
                  out.splitlines()[-1])
    for ext, text in committed.items():
      self.assertEqual(_read(os.path.join(res, f"reuters.{ext}")), text)
    self.assertLen(pd.read_csv(os.path.join(res, "partial", "reuters.csv")), 1)

  @pytest.mark.slow
  def test_selection_writes_the_committed_file_only_when_complete(self):
    root, g_root = os.path.join(self.tmp, "fake_hp"), os.path.join(self.tmp, "fake_g")
    res = os.path.join(self.tmp, "fake_hp_results")
    rng = np.random.default_rng(1)
    _fake_run(g_root, "erm_s1000", 1000, rng)
    for row in budgets.TUNED_ROWS:
      for setting in budgets.row_budget(row, "reuters"):
        _fake_run(os.path.join(root, row), f"{budgets.setting_name(setting)}_s0", 0, rng)
    cmd = ["launch.tune", "--dataset=reuters", f"--root={root}", f"--grid_root={g_root}",
           f"--results_dir={res}"]
    out = _run(cmd, self.env)
    self.assertIn("0 of 252 runs to do", out)
    self.assertEqual(out.splitlines()[-1],
                     f"Complete selection: wrote {res}/budgets_reuters.{{json,md}}.")
    committed = _read(os.path.join(res, "budgets_reuters.json"))
    record = json.loads(committed)
    self.assertTrue(record["complete"])
    self.assertEqual(set(record["selected"]), set(budgets.TUNED_ROWS))
    self.assertLen(record["grid"], 252)
    # The fake tuning runs record no momentum form: Keras' (the form before the field existed).
    self.assertEqual(record["momentum_forms"]["la"], {"keras": 18})
    last = _run(cmd + ["--rows=erm,m2m"], self.env).splitlines()[-1]
    self.assertTrue(last.startswith("Partial selection (--rows erm,m2m (default erm,rs,"), last)
    self.assertTrue(last.endswith(f"wrote {res}/partial/budgets_reuters.{{json,md}}; "
                                  f"{res}/budgets_reuters.{{json,md}} left unchanged."), last)
    self.assertEqual(_read(os.path.join(res, "budgets_reuters.json")), committed)
    with open(os.path.join(res, "partial", "budgets_reuters.json")) as fh:
      self.assertEqual(list(json.load(fh)["selected"]), ["erm", "m2m"])

  @pytest.mark.slow
  def test_runs_in_one_process_equal_separate_commands(self):
    tmp = tempfile.mkdtemp()
    common = ["--dataset=synthetic_lt", "--verbose=0", "--epochs=3", "--deferred_epoch=1",
              "--warmup_epochs=1"]
    a, b, bad, alone = (os.path.join(tmp, d) for d in ("a", "b", "bad", "alone"))
    jobs = [(bad, common + ["--gamma=2", f"--output_dir={bad}"]),
            (a, common + ["--method=erm", "--seed=0", "--noexport", f"--output_dir={a}"]),
            (b, common + ["--method=m2m", "--seed=1", f"--output_dir={b}"])]
    path = os.path.join(tmp, "jobs.json")
    with open(path, "w") as fh:
      json.dump(jobs, fh)
    proc = subprocess.run([sys.executable, "-m", "launch.run_many", path], cwd=ROOT,
                          env=self.env, capture_output=True, text=True, timeout=900)
    # The bad run fails alone (its error in its log); the others run; the status says so.
    self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
    self.assertIn(f"1 of 3 runs failed: {bad}", proc.stderr)
    self.assertIn("gamma", _read(bad + ".log"))
    self.assertIn(f"done {b} in", proc.stdout)
    _run(["m2m_tf.main"] + common + ["--method=m2m", "--seed=1", f"--output_dir={alone}"],
         self.env)
    # After another run in the same process (g trained in it too), the same epochs as alone.
    self.assertEqual(_read(os.path.join(b, "history.csv")),
                     _read(os.path.join(alone, "history.csv")))
    self.assertTrue(os.path.isdir(os.path.join(b, "saved_model")))
    self.assertTrue(os.path.exists(os.path.join(a, "results.json")))
    self.assertFalse(os.path.exists(os.path.join(a, "saved_model")))  # --noexport

  @pytest.mark.slow
  def test_every_launch_command_answers_help_without_working(self):
    out_dir = os.path.join(self.tmp, "must_not_exist")
    for args in (["launch.grid", f"--root={out_dir}", f"--results_dir={out_dir}"],
                 ["launch.readme", f"--readme={out_dir}/README.md"],
                 ["launch.cifar.gpu_check", f"--out={out_dir}"],
                 ["launch.cifar.short"],
                 ["launch.tune", f"--root={out_dir}", f"--results_dir={out_dir}"],
                 ["launch.store", f"--store={out_dir}"],
                 ["launch.digits_example", f"--root={out_dir}", f"--results_dir={out_dir}"],
                 ["launch.precision_check", f"--root={out_dir}",
                  f"--output={out_dir}/p.json"]):
      for flag in ("--help", "-h"):
        out = _run(args + [flag], self.env)  # _run asserts exit status 0
        self.assertRegex(out, r"usage|flags", args[0])
        self.assertFalse(os.path.exists(out_dir), args)

  def test_grid_rejects_an_unknown_row_in_one_line(self):
    proc = subprocess.run([sys.executable, "-m", "launch.grid", "--rows=erm,nope",
                           f"--root={self.tmp}/never"], cwd=ROOT, env=self.env,
                          capture_output=True, text=True, timeout=300)
    self.assertEqual(proc.returncode, 1)
    self.assertIn("--rows ['nope'] not in --table=table2", proc.stderr)
    self.assertFalse(os.path.exists(f"{self.tmp}/never"))

  def test_grid_gaps(self):
    rows = list(tables.TABLE2_GRID_ROWS)
    self.assertEqual(tables.grid_gaps(self.tmp, "table2", rows[:2], [0, 3]), [
        "13 of 15 rows left out", "seeds 1,2,4 of 0,1,2,3,4 left out",
        "4 of 4 runs unfinished (e.g. erm_s0)"])
    # A post-hoc row is unfinished until its base run has its adjustment.
    self.assertEqual(tables.grid_gaps(self.tmp, "table2", ["erm_posthoc_la"], [0])[-1],
                     "1 of 1 runs unfinished (e.g. erm_s0/posthoc_la.json)")
    self.assertEqual(tables.output_dir("r", []), "r")
    self.assertEqual(tables.output_dir("r", ["x"]), os.path.join("r", "partial"))

  def test_markdown_table_against_paper(self):
    df = pd.DataFrame({"row": ["erm", "erm"], "test_bacc": [60.0, 62.0], "test_gm": [50.0, 52.0],
                       "n_zero_recall": [1, 0], "val_bacc": [70.0, 70.0], "seconds": [10, 12]})
    md = tables.results_markdown(df, {"erm": tables.TABLE2_ROWS["erm"]}, tables.PAPER["reuters"],
                                 "t")
    self.assertIn("| ERM | 2 | 61.0 ± 1.4 | 51.0 ± 1.4 | 59.8 / 53.8 | +1.2 | -2.8 |", md)


  def test_t_interval_against_scipy_and_by_hand(self):
    x = [61.0, 63.5, 60.2, 64.1, 62.0]
    mean, low, high = over_seeds.t_interval(x)
    want = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    np.testing.assert_allclose((low, high), want, atol=1e-12)
    # Two values: t_{0.975,1} = 12.706; s = |a-b|/sqrt(2), so half = 12.706 * |a-b| / 2.
    _, low, high = over_seeds.t_interval([1.0, 3.0])
    self.assertAlmostEqual(high - 2.0, 12.7062047, places=6)
    self.assertTrue(np.isnan(over_seeds.t_interval([5.0])[1]))

  def test_verdict_pairs_by_seed_against_the_family_best(self):
    rows = []
    for seed, (erm, drs, m2m, ldam, ldam_m2m) in enumerate(
        [(60, 62, 65, 63, 63), (61, 63, 66, 64, 62), (59, 61, 64, 62, 64)]):
      for row, v in (("erm", erm), ("drs", drs), ("m2m", m2m), ("ldam", ldam),
                     ("ldam_m2m", ldam_m2m), ("focal", 90)):  # focal: not in a family
        rows.append({"row": row, "seed": seed, "test_bacc": float(v)})
    found = {v["row"]: v for v in over_seeds.verdicts(pd.DataFrame(rows))}
    self.assertEqual(found["m2m"]["against"], "drs")
    self.assertAlmostEqual(found["m2m"]["diff"], 3.0)
    self.assertEqual(found["m2m"]["verdict"], "holds")  # the differences are 3, 3, 3
    self.assertEqual(found["ldam_m2m"]["verdict"], "unresolved")  # 0, -2, +2
    md = over_seeds.verdict_markdown(list(found.values()), tables.TABLE2_ROWS)
    self.assertIn("| ERM-M2m | ERM-DRS | 3 | +3.0 |", md)


  def test_every_row_has_the_same_budget_of_valid_settings(self):
    # Every trained row of the grid has a budget; the post-hoc row has none (it trains nothing).
    self.assertEqual(set(budgets.SPACES), set(budgets.TUNED_ROWS))
    self.assertEqual(set(tables.TABLE2_GRID_ROWS) - set(budgets.TUNED_ROWS), {"erm_posthoc_la"})
    for row in budgets.TUNED_ROWS:
      settings = budgets.row_budget(row, "reuters")
      self.assertLen(settings, budgets.BUDGET_SIZE, row)
      self.assertLen({budgets.setting_name(st) for st in settings}, budgets.BUDGET_SIZE, row)
      for setting in settings:  # every key a configuration field, every value within its rule
        cfg = ExperimentConfig.from_leaves(dataset="reuters", **tables.TABLE2_GRID_ROWS[row][1],
                                           **setting).resolved()
        cfg.check_resolved(METHODS)
    self.assertEqual(sorted({st["deferred_epoch"] for st in budgets.row_budget("drs", "reuters")}),
                     [8, 10, 12])  # 15 epochs: deferral at 1/2, 2/3 and 4/5 of training

  def test_m2m_defaults_are_the_committed_selection(self):
    # The Quick start (the recipe's defaults) runs the table's ERM-M2m row.
    for ds in ("reuters", "twitter"):
      path = os.path.join(ROOT, "results", f"budgets_{ds}.json")
      selected = json.loads(_read(path))["selected"]["m2m"]
      r = get_recipe(ds)
      self.assertEqual({"beta": r.beta, "lam": r.lam, "gamma": r.gamma}, selected, ds)

  def test_tune_selects_on_validation_only(self):
    settings = []
    for i, (val, test) in enumerate([(70.0, 99.0), (75.0, 10.0), (72.0, 50.0)]):
      out = os.path.join(self.tmp, "tune_sel", f"s{i}")
      os.makedirs(out, exist_ok=True)
      with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump({"val_bacc": val, "test_bacc": test}, fh)
      settings.append(("erm", {"lr": [0.05, 0.1, 0.2][i]}, 0, out))
    selected, mean = budgets.select(settings)
    self.assertEqual(selected, {"erm": {"lr": 0.1}})  # best validation, worst test
    self.assertLen(mean, 3)

  def test_grid_applies_the_selected_row_settings(self):
    rows = {k: tables.TABLE2_ROWS[k] for k in ("rw", "m2m")}
    rows["m2m_gamma0"] = tables.ABLATION_ROWS["m2m_gamma0"]
    jobs = runner.plan("reuters", rows, [0], os.path.join(self.tmp, "plan"), [], None,
                       row_settings={"rw": {"lr": 0.05}, "m2m": {"beta": 0.99, "gamma": 0.9},
                                     "erm": {"weight_decay": 0.001}})
    cmds = {os.path.basename(out): cmd for _, out, cmd in jobs}
    self.assertIn("--lr=0.05", cmds["rw_s0"])
    self.assertIn("--beta=0.99", cmds["m2m_s0"])
    # An ablation takes ERM-M2m's selection, then its own flags, which win.
    self.assertIn("--beta=0.99", cmds["m2m_gamma0_s0"])
    self.assertIn("--gamma=0.0", cmds["m2m_gamma0_s0"])
    self.assertNotIn("--gamma=0.9", cmds["m2m_gamma0_s0"])
    # g is ERM under the recipe (as a pre-trained network), not the ERM row's tuned setting.
    self.assertNotIn("--weight_decay=0.001", cmds["erm_s1000"])
    self.assertEqual([st for st, out, _ in jobs if out.endswith("erm_s1000")], [0])

  def test_a_row_that_changes_the_data_gets_g_on_the_same_data(self):
    root = os.path.join(self.tmp, "plan_vocab")
    jobs = runner.plan("reuters", {k: tables.VOCAB_ROWS[k] for k in ("m2m_v2000", "drs_v2000")},
                       [1], root, [], None, row_settings={"m2m": {"lam": 0.1}})
    cmds = {os.path.basename(out): cmd for _, out, cmd in jobs}
    g_dir = os.path.join(root, "erm_vocab_size2000_s1001")
    self.assertEqual(sorted(cmds), ["drs_v2000_s1", "erm_vocab_size2000_s1001", "m2m_v2000_s1"])
    self.assertIn("--vocab_size=2000", cmds["erm_vocab_size2000_s1001"])
    self.assertIn("--seed=1001", cmds["erm_vocab_size2000_s1001"])
    self.assertIn(f"--g_checkpoint={g_dir}/best_f.weights.h5", cmds["m2m_v2000_s1"])
    self.assertIn("--lam=0.1", cmds["m2m_v2000_s1"])
    self.assertIn("--method=drs", cmds["drs_v2000_s1"])

  def test_verdict_families_of_the_tables_beyond_the_paper(self):
    fam = over_seeds.verdict_families(list(tables.VOCAB_ROWS))
    self.assertEqual(fam["m2m_v5000"], ("erm_v5000", "drs_v5000"))
    self.assertEqual(fam["ldam_m2m_v2000"], ("ldam_drw_v2000",))
    self.assertNotIn("ldam_m2m_v2000", fam.get("m2m_v2000", ()))
    self.assertEqual(over_seeds.verdict_families(list(tables.TABLE2_ROWS)),
                     over_seeds.VERDICT_FAMILIES)
    self.assertEqual(over_seeds.verdict_families(list(tables.SUBSTITUTE_ROWS)),
                     {"m2m": ("erm", "drs"), "m2m_random": ("erm_random", "drs_random")})
    self.assertEqual(over_seeds.verdict_families(list(tables.ABLATION_ROWS)), {})


class LogitAdjustmentRowsTest(absltest.TestCase):
  """The logit-adjustment family's rows of Table 2 (issue 24): definitions, budgets, the plan,
  the post-hoc row's validation-only choice, the store and the verdict against the family."""

  def test_row_definitions(self):
    self.assertEqual(list(tables.TABLE2_GRID_ROWS),
                     list(tables.TABLE2_ROWS) + ["la", "balanced_softmax", "erm_posthoc_la",
                                                 "la_m2m"])
    flags = {k: v[1] for k, v in tables.LA_ROWS.items()}
    self.assertEqual(flags, {"la": {"loss": "logit_adjusted", "method": "erm"},
                             "balanced_softmax": {"loss": "balanced_softmax", "method": "erm"},
                             "erm_posthoc_la": {"posthoc_of": "erm"},
                             "la_m2m": {"loss": "logit_adjusted", "method": "m2m"}})
    self.assertEqual(tables.TABLES["table2"], tables.TABLE2_GRID_ROWS)
    self.assertLen(tables.TABLE2_ROWS, 11)  # the paper's rows (the torch reference, CIFAR) stay
    # The README's headline names the new rows by these keys and labels (the per-sample start
    # is a CIFAR row of launch.cifar.full's).
    self.assertContainsSubset(set(readme.HEADLINE_ROWS) - {"m2m_per_sample"},
                              set(tables.TABLE2_GRID_ROWS))
    self.assertEqual(tables.EXTRA_ROW_LABELS["erm_posthoc_la"], "ERM + post-hoc LA")
    self.assertEqual(tables.finished_marker(tables.LA_ROWS, "erm_posthoc_la", 3),
                     f"erm_s3/{output_dir.POSTHOC_FILE}")

  def test_budgets_of_the_new_rows(self):
    erm_like = budgets.row_budget("erm", "reuters")
    self.assertEqual(budgets.row_budget("balanced_softmax", "reuters"), erm_like)  # tau fixed
    self.assertEqual(budgets.row_budget("la_m2m", "reuters"), budgets.row_budget("m2m",
                                                                                 "reuters"))
    la_space = budgets.row_budget("la", "reuters")
    self.assertLen(la_space, 18)
    self.assertEqual(sorted({s["la_tau"] for s in la_space}), [0.5, 1.0, 2.0])
    self.assertEqual(sorted({s["lr"] for s in la_space}), [0.05, 0.1, 0.2])
    self.assertEqual(sorted({s["weight_decay"] for s in la_space}), [5e-5, 2e-4])
    for row in ("la", "balanced_softmax", "la_m2m"):
      self.assertLen(budgets.row_budget(row, "twitter"), budgets.BUDGET_SIZE, row)
    self.assertNotIn("erm_posthoc_la", budgets.SPACES)
    md = budgets.budget_markdown("table2", tables.TABLE2_GRID_ROWS,
                                 {"erm": {"lr": 0.2}, "la": {"la_tau": 1.0}}, "reuters",
                                 {"erm": {"keras": 18}, "la": {"pytorch": 18}})
    self.assertIn("| ERM + post-hoc LA | none: ERM's selection; tau post hoc on each run's "
                  "validation bACC | ERM's: lr=0.2 | Keras' |", md)
    self.assertIn("| LA (loss) | la_tau {0.5, 1, 2} × lr {0.05, 0.1, 0.2} × weight_decay "
                  "{5e-05, 0.0002} | la_tau=1 | PyTorch's |", md)
    rows = {k: tables.TABLE2_GRID_ROWS[k] for k in ("erm", "la", "erm_posthoc_la")}
    self.assertEqual(budgets.tuning_form_note(rows, {"erm": {"keras": 18}, "la": {"pytorch": 18}}),
                     "Settings tuned on validation in Keras' form: ERM, ERM + post-hoc LA; in "
                     "PyTorch's form: LA (loss) (a post-hoc row: its base row's); every run of "
                     "this table trained in the form of the SGD momentum line.")
    self.assertEqual(budgets.tuning_form_note(rows, {"erm": {"pytorch": 18},
                                                     "la": {"pytorch": 18}}), "")

  def test_plan_trains_the_base_row_for_the_posthoc_row_and_posthoc_jobs(self):
    root = tempfile.mkdtemp()
    rows = {k: tables.LA_ROWS[k] for k in ("erm_posthoc_la", "la", "la_m2m")}
    jobs = runner.plan("reuters", rows, [0, 1], root, [], None,
                       row_settings={"erm": {"lr": 0.2}, "la": {"la_tau": 2.0},
                                     "la_m2m": {"beta": 0.99}})
    cmds = {os.path.basename(out): cmd for _, out, cmd in jobs}
    self.assertEqual(sorted(cmds), ["erm_s0", "erm_s1", "erm_s1000", "erm_s1001", "la_m2m_s0",
                                    "la_m2m_s1", "la_s0", "la_s1"])
    self.assertIn("--lr=0.2", cmds["erm_s0"])  # ERM's selected setting, no setting of its own
    self.assertIn("--la_tau=2.0", cmds["la_s1"])
    self.assertIn("--loss=logit_adjusted", cmds["la_m2m_s0"])
    self.assertIn("--method=m2m", cmds["la_m2m_s0"])
    self.assertIn("--beta=0.99", cmds["la_m2m_s0"])
    self.assertIn(f"--g_checkpoint={root}/erm_s1000/best_f.weights.h5", cmds["la_m2m_s0"])
    self.assertEqual(runner.posthoc_jobs(rows, [0, 1], root), [])  # no finished ERM run yet
    _fake_run(root, "erm_s1", 1, np.random.default_rng(0))
    (out, cmd), = runner.posthoc_jobs(rows, [0, 1], root)
    self.assertEqual(out, os.path.join(root, "erm_s1", "posthoc_la.json"))
    self.assertEqual(cmd[1:], ["-m", "m2m_tf.evaluate", f"--checkpoint={root}/erm_s1",
                               "--posthoc_tau=select"])  # tau chosen on validation
    _fake_posthoc(os.path.join(root, "erm_s1"), np.random.default_rng(0))
    self.assertEqual(runner.posthoc_jobs(rows, [0, 1], root), [])

  def test_posthoc_row_takes_the_validation_choice_never_the_best_test(self):
    root, rng = tempfile.mkdtemp(), np.random.default_rng(0)
    _fake_run(root, "erm_s0", 0, rng)
    # Validation prefers tau 0.5; the unadjusted run is far better on test (80 vs 55).
    _fake_posthoc(os.path.join(root, "erm_s0"), rng, val=[60.0, 70.0, 65.0], test=55.0,
                  raw_test=80.0)
    df = tables.load_posthoc_runs(root, tables.LA_ROWS)
    self.assertEqual(df[["row", "run", "seed", "posthoc_tau", "test_bacc", "raw_test_bacc",
                         "val_bacc"]].values.tolist(),
                     [["erm_posthoc_la", "erm_s0", 0, 0.5, 55.0, 80.0, 70.0]])
    self.assertEqual(df.zero_recall_classes.item(), "small")
    # A tau that is not the validation choice (here the test's best, 0) or a fixed one: refused.
    _fake_posthoc(os.path.join(root, "erm_s0"), rng, val=[60.0, 70.0, 65.0], tau=0.0)
    with self.assertRaisesRegex(ValueError, "tau 0.0 is not the validation choice 0.5"):
      tables.load_posthoc_runs(root, tables.LA_ROWS)
    _fake_posthoc(os.path.join(root, "erm_s0"), rng, tau=1.0, mode="fixed")
    with self.assertRaisesRegex(ValueError, "was fixed"):
      tables.load_posthoc_runs(root, tables.LA_ROWS)
    # Ties go to the smallest tau, as m2m_tf.logit_adjustment.select_tau.
    _fake_posthoc(os.path.join(root, "erm_s0"), rng, val=[60.0, 70.0, 70.0])
    self.assertEqual(tables.load_posthoc_runs(root, tables.LA_ROWS).posthoc_tau.item(), 0.5)

  def test_collect_with_the_posthoc_row(self):
    root, res, rng = tempfile.mkdtemp(), tempfile.mkdtemp(), np.random.default_rng(3)
    for seed in (0, 1):
      for row in ("erm", "m2m"):
        _fake_run(root, f"{row}_s{seed}", seed, rng)
      _fake_run(root, f"erm_s{1000 + seed}", 1000 + seed, rng)  # g: never a post-hoc run
      _fake_posthoc(os.path.join(root, f"erm_s{seed}"), rng)
    rows = {k: tables.TABLE2_GRID_ROWS[k] for k in ("erm", "m2m", "erm_posthoc_la")}
    df = tables.collect(root, "t", rows, results_dir=res, seeds=[0, 1])
    self.assertEqual(df["row"].tolist(), ["erm", "erm", "m2m", "m2m", "erm_posthoc_la",
                                          "erm_posthoc_la"])
    hist = pd.read_csv(os.path.join(res, "t_history.csv"))
    self.assertEqual(sorted(set(hist["row"])), ["erm", "m2m"])  # no copy of ERM's epochs
    md = _read(os.path.join(res, "t.md"))
    self.assertIn("| ERM + post-hoc LA | 2 |", md)
    self.assertIn("## Post-hoc logit adjustment", md)
    self.assertIn("### M2m against the logit-adjustment family", md)
    self.assertIn("- ERM-M2m vs ERM + post-hoc LA: ", md)

  def test_verdict_against_the_family_best(self):
    rows = []
    for seed, (la_, bs, post, m2m, la_m2m) in enumerate(
        [(66, 67, 65, 64, 68), (66, 68, 66, 66, 70), (67, 69, 64, 65, 71)]):
      for row, v in (("la", la_), ("balanced_softmax", bs), ("erm_posthoc_la", post),
                     ("m2m", m2m), ("la_m2m", la_m2m)):
        rows.append({"row": row, "seed": seed, "test_bacc": float(v)})
    fam = over_seeds.la_verdict_families(["m2m", "la_m2m", "la", "balanced_softmax",
                                      "erm_posthoc_la"])
    self.assertEqual(fam, {"m2m": over_seeds.LA_FAMILY, "la_m2m": over_seeds.LA_FAMILY})
    self.assertEqual(over_seeds.la_verdict_families(list(tables.TABLE2_ROWS)), {})
    self.assertEqual(set(over_seeds.la_verdict_families(list(tables.TABLE2_GRID_ROWS))),
                     {"m2m", "ldam_m2m", "la_m2m"})
    found = {v["row"]: v for v in over_seeds.verdicts(pd.DataFrame(rows), families=fam)}
    self.assertEqual(found["m2m"]["against"], "balanced_softmax")  # the best mean, 68
    self.assertAlmostEqual(found["m2m"]["diff"], -3.0)  # -3, -2, -4
    self.assertEqual(found["m2m"]["verdict"], "fails")
    self.assertAlmostEqual(found["la_m2m"]["diff"], 1.666666666, places=6)  # 1, 2, 2
    self.assertEqual(found["la_m2m"]["verdict"], "holds")
    md = over_seeds.la_verdict_markdown([found["m2m"], found["la_m2m"]], tables.TABLE2_GRID_ROWS)
    self.assertIn("| ERM-M2m | Balanced Softmax | 3 | -3.0 | [-5.5, -0.5] | fails |", md)
    self.assertIn("- ERM-M2m vs Balanced Softmax: the logit-adjustment family's best beats it "
                  "here.", md)
    self.assertIn("- LA-M2m vs Balanced Softmax: M2m beats the logit-adjustment family's best "
                  "here.", md)
    self.assertEqual(over_seeds.la_verdict_markdown([], tables.TABLE2_GRID_ROWS), "")

  def test_store_keeps_the_posthoc_file_and_the_pytorch_grid(self):
    tmp = tempfile.mkdtemp()
    runs, st, fresh = (os.path.join(tmp, d) for d in ("runs", "store", "fresh"))
    rng = np.random.default_rng(0)
    _fake_run(os.path.join(runs, "grid_pytorch", "ds"), "erm_s0", 0, rng)
    _fake_posthoc(os.path.join(runs, "grid_pytorch", "ds", "erm_s0"), rng)
    _fake_run(os.path.join(runs, "grid_pytorch", "ds"), "la_s0", 0, rng)
    self.assertEqual(store.save(runs, "ds", st), 2)
    store.restore(fresh, "ds", st)
    rel = os.path.join("grid_pytorch", "ds", "erm_s0", "posthoc_la.json")
    self.assertEqual(_read(os.path.join(fresh, rel)), _read(os.path.join(runs, rel)))
    self.assertFalse(os.path.exists(os.path.join(fresh, "grid_pytorch", "ds", "la_s0",
                                                 "posthoc_la.json")))
    self.assertTrue(store.is_stored_root("runs/grid_pytorch/reuters", "reuters"))
    self.assertTrue(store.is_stored_root("runs/grid/reuters/", "reuters"))
    self.assertFalse(store.is_stored_root("runs/grid_pytorch/twitter", "reuters"))
    self.assertFalse(store.is_stored_root("/tmp/x/grid", "reuters"))


if __name__ == "__main__":
  absltest.main()
