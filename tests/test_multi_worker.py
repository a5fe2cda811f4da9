"""--strategy=multi_worker: two worker processes on localhost train as one device does, and a
run whose worker is killed resumes to the uninterrupted run.

The runs are M2m on the synthetic long-tailed set, g trained first with ERM (also on the two
workers), 4 epochs with phase 2 from epoch 3: the M2m choices are made over the all-gathered
global batch. One run uses the default strategy in one process, one `--strategy=mirrored` on two
logical CPUs, one `launch/multiworker.sh 2` (TF_CONFIG per worker on free localhost ports),
and one is killed.

Equality with one device (same seed, same global batch of 32, nothing fixed): each worker
reads the half of every global batch that the single-device run's replica would, so the
runs differ only in where float32 sums are split. A gradient entry is a sum over the 32
examples; one device sums them in one pass, two workers in two halves joined by the
all-reduce. Both are within gamma_31 * S of the exact sum (S = sum of the terms' magnitudes,
u = 2^-24, gamma_n = n u / (1 - n u)), so they differ by at most 2 * 31 * u * S. For this
MLP, S <= max(|h|, 2 max|W2|) with h the hidden activations (inputs in [0, 1], the
cross-entropy's logit gradient has L1 norm <= 2), computed below from the weights as G. A
gradient difference d at one step moves every later SGD update by lr m^k d, in all
lr d / (1 - m) <= d (lr <= 0.1, momentum m = 0.9). Summed over the steps of g's run and f's
(g's difference reaches f through the translation; first order, gain <= 1 assumed), the
weights differ by at most STEPS * 2 * 31 * u * G. The losses are means of the same per-example
losses: the same bound. The counts (M2m's generation, candidates, acceptances) and the bACC
of every epoch must be equal: a difference that small flips no acceptance test and no argmax
unless a value lies that close to its threshold (the premise, as in test_distributed.py).

Equality with two mirrored devices (MirroredStrategy over 2 logical CPUs in one process):
bit for bit. Each replica runs the same ops on the same half batch in both, and the
all-reduce of two values is one addition, which is commutative: nothing is reassociated.

Kill and restart: once f's run has committed epoch 1, worker 1 is SIGKILLed. Worker 0 loses
its peer at its next collective and stops with a one-line error (or is killed after a bound).
The same command on both workers resumes from the last commit and must end with the
uninterrupted two-worker run's results, history and weights, bit for bit.

Another number of workers: f's run (against the two-worker run's g) stopped after 2 of 4 epochs
on 2 workers and resumed on 1. The global batches, their augmentation and M2m's draws do not
depend on the worker count, so it must end as the uninterrupted two-worker run: results, bACC
and counts equal, weights and losses within the tolerance above (its last 2 epochs differ from
the two-worker run's as one device's do).

Worker checks (WorkerChecksTest): before training, the workers compare their configurations,
the sha256 of g's weights and the digest of their data. Copies of the same g and data under
other paths train; another g and other data on one worker stop both, in one line naming both.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from unittest import mock

import keras
import pytest
import numpy as np
import tensorflow as tf

from helpers import h5_arrays, load_results
from m2m_tf.errors import ConfigError
from m2m_tf.models import build_classifier
from m2m_tf.training import multi_worker as mw

pytestmark = pytest.mark.slow

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--dataset=synthetic_lt", "--method=m2m", "--seed=0", "--epochs=4", "--deferred_epoch=2",
         "--warmup_epochs=1", "--lr_milestones=3", "--lr_factors=0.1", "--n_buckets=2",
         "--jit_compile=false", "--verbose=2"]
# Synthetic training set: 369 examples, batch 32 -> 11 steps per epoch, for g and for f.
STEPS = 2 * 4 * 11
U32 = 2.0 ** -24
COUNT_KEYS = ("gen_slots", "candidates", "accepted", "m2m_accepted")
EXACT_KEYS = COUNT_KEYS + ("epoch", "best_epoch", "accuracy", "val_bacc", "test_bacc", "val_gm",
                           "test_gm")
# `--strategy=mirrored` over 2 logical CPUs, set before TensorFlow initialises.
MIRRORED = textwrap.dedent("""
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from absl import app
    from m2m_tf import main
    sys.argv[0] = "m2m_tf.main"
    app.run(main.main)
""")
SURVIVOR_WAIT_S = 90  # the survivor's collective fails when the peer stops its heartbeats


def _env(tmp: str, **extra) -> dict:
  env = {k: v for k, v in os.environ.items()
         if k != "TF_CONFIG" and not k.startswith("SLURM_")}
  env.update(TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=tmp, M2M_CACHE_DIR=os.path.join(tmp, "cache"),
             PYTHONPATH=_REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)
  return env


def _start_workers(out: str, ports, tmp: str, logs: str, flags=FLAGS, per_worker=None):
  """Popen of every worker of the cluster at `ports`, each with its TF_CONFIG and log
  (`per_worker[i]`: worker i's own further flags)."""
  procs = []
  for i in range(len(ports)):
    own = list(per_worker[i]) if per_worker else []
    with open(f"{logs}-{i}.log", "w") as log:
      procs.append(subprocess.Popen(
          [sys.executable, "-m", "m2m_tf.main", "--strategy=multi_worker", *flags, *own,
           f"--output_dir={out}"], env=_env(tmp, TF_CONFIG=mw.local_tf_config(ports, i)),
          cwd=_REPO, stdout=log, stderr=subprocess.STDOUT))
  return procs


def _end(procs) -> None:
  for p in procs:
    if p.poll() is None:
      p.kill()
    p.wait()


def _tail(path: str, n: int = 3000) -> str:
  """The end of a log file ('' when it does not exist)."""
  if not os.path.exists(path):
    return ""
  with open(path) as fh:
    return fh.read()[-n:]


def _history(folder: str):
  with open(os.path.join(folder, "history.csv")) as fh:
    return list(csv.DictReader(fh))


def _weight_scale(weights: dict) -> float:
  """G (module docstring) of the MLP input -> hidden -> logits whose weights these are."""
  w1, b1 = weights["layers/dense/vars/0"], weights["layers/dense/vars/1"]
  w2 = weights["layers/dense_1/vars/0"]
  hidden = np.abs(w1).sum(axis=0) + np.abs(b1)  # |h| for inputs in [0, 1]
  return float(max(hidden.max(), 2 * np.abs(w2).max()))


class MultiWorkerRunTest(tf.test.TestCase):
  """One device against two workers, and a killed worker (module docstring)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix="m2m_multiworker_")
    cls.single, cls.mirrored, cls.two = (os.path.join(cls.root, n)
                                         for n in ("single", "mirrored", "two"))
    cls.tmp_two = os.path.join(cls.root, "tmp_two")
    os.makedirs(cls.tmp_two)
    cls.single_proc = subprocess.run(
        [sys.executable, "-m", "m2m_tf.main", *FLAGS, f"--output_dir={cls.single}"],
        env=_env(cls.root), cwd=_REPO, capture_output=True, text=True, timeout=600)
    cls.mirrored_proc = subprocess.run(
        [sys.executable, "-c", MIRRORED, *FLAGS, "--strategy=mirrored",
         f"--output_dir={cls.mirrored}"], env=_env(cls.root), cwd=_REPO, capture_output=True,
        text=True, timeout=600)
    cls.two_proc = subprocess.run(
        ["bash", os.path.join(_REPO, "launch", "multiworker.sh"), "2", *FLAGS,
         f"--output_dir={cls.two}"], env=_env(cls.tmp_two, LOG_DIR=cls.two + "_logs"),
        cwd=_REPO, capture_output=True, text=True, timeout=900)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def _check_runs(self):
    self.assertEqual(self.single_proc.returncode, 0, self.single_proc.stderr[-3000:])
    logs = "".join(_tail(os.path.join(self.two + "_logs", f"worker-{i}.log")) for i in range(2))
    self.assertEqual(self.two_proc.returncode, 0, self.two_proc.stderr[-2000:] + logs)

  def test_two_workers_train_as_one_device(self):
    self._check_runs()
    one, two = load_results(self.single), load_results(self.two)
    self.assertEqual((one.pop("strategy"), two.pop("strategy")), ("default", "multi_worker"))
    self.assertEqual(one, two)  # the selected epoch's metrics, per class: exactly equal
    hist1, hist2 = _history(self.single), _history(self.two)
    self.assertLen(hist2, 4)
    self.assertGreater(float(hist2[-1]["accepted"]), 0)  # phase 2 ran and M2m generated
    self.assertEqual(float(hist2[0]["gen_slots"]), 0)
    scales = []
    for sub in ("", "g_erm"):
      w1 = h5_arrays(os.path.join(self.single, sub, "best_f.weights.h5"))
      w2 = h5_arrays(os.path.join(self.two, sub, "best_f.weights.h5"))
      scales += [_weight_scale(w1), _weight_scale(w2)]
    tol = STEPS * 2 * 31 * U32 * max(scales)
    diffs = {}
    for sub in ("", "g_erm"):
      w1 = h5_arrays(os.path.join(self.single, sub, "best_f.weights.h5"))
      w2 = h5_arrays(os.path.join(self.two, sub, "best_f.weights.h5"))
      diffs[sub or "f"] = max(float(np.abs(w1[k] - w2[k]).max()) for k in w1)
      for k in w1:
        self.assertAllClose(w1[k], w2[k], atol=tol, rtol=0, msg=f"{sub}/{k}")
    for r1, r2 in zip(hist1, hist2):
      for k in EXACT_KEYS:
        self.assertEqual(r1[k], r2[k], msg=f"epoch {r1['epoch']} {k}")
      self.assertAllClose(float(r1["loss"]), float(r2["loss"]), atol=tol, rtol=0)
    print(f"multi-worker equality: max |w_1 device - w_2 workers| {diffs}, tolerance {tol:.2g} "
          f"(G = {max(scales):.3g})")

  def test_two_workers_train_as_two_mirrored_devices(self):
    self._check_runs()
    self.assertEqual(self.mirrored_proc.returncode, 0, self.mirrored_proc.stderr[-3000:])
    mirrored, two = load_results(self.mirrored), load_results(self.two)
    self.assertEqual((mirrored.pop("strategy"), two.pop("strategy")), ("mirrored", "multi_worker"))
    self.assertEqual(mirrored, two)
    for sub in ("", "g_erm"):
      self.assertEqual(_history(os.path.join(self.mirrored, sub)),
                       _history(os.path.join(self.two, sub)))
      w1 = h5_arrays(os.path.join(self.mirrored, sub, "best_f.weights.h5"))
      w2 = h5_arrays(os.path.join(self.two, sub, "best_f.weights.h5"))
      for k in w1:
        self.assertAllEqual(w1[k], w2[k], msg=f"{sub}/{k}")

  def test_only_the_chief_writes(self):
    self._check_runs()
    # The chief's folder holds what a one-device run writes; worker 1 wrote only in its private
    # temporary folder (under TMPDIR), which it deleted.
    self.assertEqual(sorted(os.listdir(self.two)), sorted(os.listdir(self.single)))
    self.assertEqual([n for n in os.listdir(self.tmp_two) if n.startswith("m2m_tf-")], [])
    self.assertFalse(os.path.exists(os.path.join(self.two, "ckpt")))
    with open(os.path.join(self.two + "_logs", "worker-1.log")) as fh:
      self.assertNotIn("Epoch 1/4", fh.read())  # the progress bar is the chief's

  def test_killed_worker_resumes_to_the_same_run(self):
    self._check_runs()
    out, tmp = os.path.join(self.root, "killed"), os.path.join(self.root, "tmp_killed")
    os.makedirs(tmp)
    ports = mw.free_local_ports(2)
    logs = os.path.join(self.root, "killed")
    procs = _start_workers(out, ports, tmp, logs + "_a")
    try:
      record = os.path.join(out, "ckpt", "state-0001.json")  # f's first commit (g's is in g_erm)
      while not os.path.exists(record):
        self.assertTrue(all(p.poll() is None for p in procs), "a worker ended before the kill")
        time.sleep(0.05)
      procs[1].send_signal(signal.SIGKILL)  # in epoch 2 of f's run, or in its first commit
      try:
        survivor = procs[0].wait(timeout=SURVIVOR_WAIT_S)
      except subprocess.TimeoutExpired:
        survivor = None
      _end(procs)
      last = _tail(logs + "_a-0.log").strip().splitlines()[-1]
      print(f"kill: worker 0 {'exited ' + str(survivor) if survivor is not None else 'was killed'}"
            f": {last[:200]}")
      if survivor is not None:
        self.assertEqual(survivor, 1)
        self.assertIn("lost a peer", last)
      procs = _start_workers(out, ports, tmp, logs + "_b")  # the same command, both workers
      codes = [p.wait(timeout=900) for p in procs]
    finally:
      _end(procs)
    self.assertEqual(codes, [0, 0], _tail(logs + "_b-0.log") + _tail(logs + "_b-1.log"))
    self.assertEqual(load_results(self.two), load_results(out))
    for sub in ("", "g_erm"):
      a = h5_arrays(os.path.join(self.two, sub, "best_f.weights.h5"))
      b = h5_arrays(os.path.join(out, sub, "best_f.weights.h5"))
      for k in a:
        self.assertAllEqual(a[k], b[k], msg=f"{sub}/{k}")
      self.assertEqual(_history(os.path.join(self.two, sub)), _history(os.path.join(out, sub)))
    # The restarted worker 1 deleted its folder; the killed one's is all that may be left.
    self.assertLessEqual(len([n for n in os.listdir(tmp) if n.startswith("m2m_tf-")]), 1)

  def test_resumes_on_another_number_of_workers(self):
    # Stopped after 2 of 4 epochs on 2 workers, resumed on 1: the same run as the 2-worker one
    # (module docstring), f trained against the 2-worker run's g.
    self._check_runs()
    out, tmp = os.path.join(self.root, "resized"), os.path.join(self.root, "tmp_resized")
    os.makedirs(tmp)
    flags = FLAGS + ["--g_checkpoint=" + os.path.join(self.two, "g_erm", "best_f.weights.h5")]
    for workers, extra in ((2, ["--stop_after=2"]), (1, [])):
      logs = os.path.join(self.root, f"resized_{workers}")
      procs = _start_workers(out, mw.free_local_ports(workers), tmp, logs, flags + extra)
      try:
        codes = [p.wait(timeout=900) for p in procs]
      finally:
        _end(procs)
      self.assertEqual(codes, [0] * workers,
                       "".join(_tail(f"{logs}-{i}.log") for i in range(workers)))
    self.assertEqual(load_results(self.two), load_results(out))
    w1 = h5_arrays(os.path.join(self.two, "best_f.weights.h5"))
    w2 = h5_arrays(os.path.join(out, "best_f.weights.h5"))
    tol = STEPS * 2 * 31 * U32 * max(_weight_scale(w1), _weight_scale(w2))
    for k in w1:
      self.assertAllClose(w1[k], w2[k], atol=tol, rtol=0, msg=k)
    for r1, r2 in zip(_history(self.two), _history(out), strict=True):
      for k in EXACT_KEYS:
        self.assertEqual(r1[k], r2[k], msg=f"epoch {r1['epoch']} {k}")
      self.assertAllClose(float(r1["loss"]), float(r2["loss"]), atol=tol, rtol=0)
    print(f"2 -> 1 workers: max |w - w_2 workers| "
          f"{max(float(np.abs(w1[k] - w2[k]).max()) for k in w1):.3g}, tolerance {tol:.2g}")


def _user_npz(path: str, change: bool = False) -> None:
  """300 examples of 6 features, 3 classes; `change` alters one value."""
  rng = np.random.default_rng(0)
  y = np.arange(300) % 3
  x = (rng.normal(0, 1, (300, 6)) + y[:, None]).astype(np.float32)
  if change:
    x[17, 2] += 0.5
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.savez(path, x_train=x, y_train=y)


def _g_file(path: str, seed: int) -> None:
  """An MLP g (6 -> 8 -> 3, standardised input) with seeded weights."""
  keras.utils.set_random_seed(seed)
  build_classifier("mlp", (6,), 3, hidden_units=(8,),
                   normalization=((0.0,) * 6, (1.0,) * 6)).save_weights(path)


class WorkerChecksTest(tf.test.TestCase):
  """Before training, the workers compare their configurations, g's weights and their data by
  content (paths may differ: the same files mounted elsewhere)."""

  FLAGS = ["--dataset=npz:data.npz", "--method=m2m", "--hidden_units=8", "--epochs=2",
           "--batch_size=32", "--jit_compile=false", "--verbose=0", "--noexport"]

  def _two_workers(self, root: str, name: str, per_worker) -> list:
    procs = _start_workers(os.path.join(root, name), mw.free_local_ports(2), root,
                           os.path.join(root, name), self.FLAGS, per_worker)
    try:
      return [p.wait(timeout=600) for p in procs]
    finally:
      _end(procs)

  def test_workers_compare_g_and_data_by_content(self):
    root = tempfile.mkdtemp(prefix="m2m_worker_checks_")
    self.addCleanup(shutil.rmtree, root, ignore_errors=True)
    dirs = [os.path.join(root, d) for d in ("a", "b", "c")]
    for d, change in zip(dirs, (False, False, True)):
      _user_npz(os.path.join(d, "data.npz"), change)
    g = [os.path.join(root, f"g{i}.weights.h5") for i in range(3)]
    _g_file(g[0], 1)
    _g_file(g[2], 2)
    shutil.copy(g[0], g[1])
    # Other paths, the same content: the run trains.
    same = [[f"--data_dir={dirs[i]}", f"--g_checkpoint={g[i]}"] for i in (0, 1)]
    codes = self._two_workers(root, "same", same)
    self.assertEqual(codes, [0, 0], _tail(os.path.join(root, "same-0.log")))
    self.assertTrue(os.path.exists(os.path.join(root, "same", "results.json")))
    # Another g file and other data on worker 1: both workers stop, in one line naming both.
    other = [[f"--data_dir={dirs[i]}", f"--g_checkpoint={g[i]}"] for i in (0, 2)]
    self.assertEqual(self._two_workers(root, "other", other), [1, 1])
    for i in range(2):
      last = _tail(os.path.join(root, f"other-{i}.log")).strip().splitlines()[-1]
      self.assertEqual(last, "m2m_tf.main: error: the workers were started with different g "
                       "weights (the sha256 of the g file(s)) and training data (the sha256 of "
                       "the loaded splits); start every worker with the same flags, g and data.")

  def test_worker_prints(self):
    root = self.get_temp_dir()
    a, b, c = (os.path.join(root, n) for n in ("a.h5", "b.h5", "c.h5"))
    for path, text in ((a, b"g"), (b, b"g"), (c, b"h")):
      with open(path, "wb") as fh:
        fh.write(text)
    config = {"seed": 0, "lr": 0.1}
    one = mw.worker_prints(config, "d" * 64, a)
    self.assertEqual(one, mw.worker_prints(config, "d" * 64, b))  # a copy elsewhere
    self.assertNotEqual(one["g_weights"], mw.worker_prints(config, "d" * 64, c)["g_weights"])
    other_data = mw.worker_prints(config, "e" * 64, a)
    self.assertNotEqual(one["training_data"], other_data["training_data"])
    other_config = mw.worker_prints({"seed": 1, "lr": 0.1}, "d" * 64, a)
    self.assertNotEqual(one["configuration"], other_config["configuration"])
    self.assertEqual(set(one), set(mw.PRINT_LABELS))
    for value in one.values():
      self.assertTrue(0 <= value < 2 ** 63)


class ClusterSetupTest(tf.test.TestCase):
  """The cluster comes from TF_CONFIG or Slurm; bad or missing input is one line."""

  def test_without_a_cluster_the_error_is_one_line(self):
    root = self.get_temp_dir()
    out = os.path.join(root, "no_cluster")
    proc = subprocess.run([sys.executable, "-m", "m2m_tf.main", "--strategy=multi_worker",
                           *FLAGS, f"--output_dir={out}"], env=_env(root), cwd=_REPO,
                          capture_output=True, text=True, timeout=300)
    self.assertEqual(proc.returncode, 1)
    self.assertEqual(proc.stderr.strip().splitlines()[-1],
                     "m2m_tf.main: error: --strategy=multi_worker needs TF_CONFIG (the cluster "
                     "and this worker's task, docs/distributed.md) or a Slurm task "
                     "(SLURM_JOB_ID, SLURM_PROCID).")
    self.assertFalse(os.path.exists(out))  # refused before any work

  def test_tf_config_is_checked(self):
    for text in ("{not json", json.dumps({"cluster": {"worker": ["localhost:1"]}}),
                 json.dumps({"cluster": {"worker": ["localhost:1"]},
                             "task": {"type": "ps", "index": 0}})):
      with self.assertRaises(ConfigError):
        mw.cluster_resolver({"TF_CONFIG": text})

  def test_slurm_task_gives_the_cluster(self):
    env = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2",
           "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}
    with mock.patch.dict(os.environ, env, clear=False), \
         mock.patch("shutil.which", return_value=None):
      os.environ.pop("TF_CONFIG", None)
      os.environ.pop("CUDA_VISIBLE_DEVICES", None)
      resolver = mw.cluster_resolver(os.environ)
      spec = resolver.cluster_spec().as_dict()
    self.assertEqual(spec, {"worker": ["node1:8888", "node2:8888"]})
    self.assertEqual((resolver.task_type, resolver.task_id), ("worker", 1))
    with mock.patch.dict(os.environ, {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0"}, clear=True):
      with self.assertRaisesRegex(ConfigError, "srun"):
        mw.cluster_resolver(os.environ)

  def test_benchmark_summary(self):
    from benchmarks import multiworker as bench_mw

    def cluster(workers, step_s):
      return {"workers": workers, "workload": "w",
              "rows": [{"config": "erm/default", "median_step_s": step_s}]}

    runs = {1: [cluster(1, 0.01), cluster(1, 0.03), cluster(1, 0.02)],
            2: [cluster(2, 0.05), cluster(2, 0.03), cluster(2, 0.04)]}
    (row,) = bench_mw.summarise(runs, 2)  # medians over the rounds: 0.02 and 0.04
    self.assertAllClose([row["one_worker_step_s"], row["2_workers_step_s"], row["ratio"]],
                        [0.02, 0.04, 2.0])
    table = bench_mw.markdown({"workers": 2, "rounds": 3, "workload": "w", "cores": 2,
                               "load_average": [1.0], "summary": [row]})
    self.assertIn("| erm/default | 20.0 | 40.0 | 2.00 |", table)
    with self.assertRaises(SystemExit):
      bench_mw.parse_args(["--workers", "1"])


if __name__ == "__main__":
  tf.test.main()
