"""Tests of launch/torch_reference/: the PyTorch reference against m2m_tf and float64 NumPy."""

import csv
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch

from helpers import OFFICIAL_NPZ
from launch import tables as grid_tables
from launch.torch_reference import bridge
from launch.torch_reference import cli
from launch.torch_reference import report as tables
from launch.torch_reference import training as tr
from m2m_tf import losses
from m2m_tf import models
from m2m_tf.m2m.translation import translate as tf_translate
from m2m_tf.models import torch_import
from m2m_tf.training import checkpoint
from m2m_tf.training import schedules
from m2m_tf.training.trainer import M2mTrainer
from test_models import numpy_resnet32

REPO = pathlib.Path(__file__).resolve().parent.parent
COUNTS = torch.tensor([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50], dtype=torch.float32)


def _official_g():
  g = tr.build_resnet32()
  tr.load_official(g, OFFICIAL_NPZ)
  return g.eval()


def test_learning_rate_equals_m2m_tf_schedule():
  ours = schedules.warmup_step_lr(0.1, 5, [160, 180], [0.01, 0.01])
  recipe = tr.Recipe()
  for epoch in range(200):
    assert tr.learning_rate(recipe, epoch) == pytest.approx(ours(epoch), rel=1e-12)
  assert tr.learning_rate(recipe, 0) == pytest.approx(0.02)
  assert tr.learning_rate(recipe, 180) == pytest.approx(1e-5)


def test_resnet32_on_official_weights_matches_float64_numpy():
  g = _official_g()
  assert sum(p.numel() for p in g.parameters()) == 464154  # ResNet-32, CIFAR-10 head
  with np.load(OFFICIAL_NPZ) as d:
    sd = {k: d[k] for k in d.files}
  x = np.random.default_rng(2).random((3, 32, 32, 3), np.float32)
  ref = numpy_resnet32(x, sd)
  with torch.no_grad():
    got = g(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  # The same float32 analysis as m2m_tf's own model test (tests/test_models.py): ~5e-5 for
  # logits up to 6.5 through 31 convs and BNs.
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_official_init_scales():
  torch.manual_seed(0)
  f = tr.build_resnet32()
  w = f.stage_2[0].conv_a.weight.detach().numpy()  # 16 -> 32 channels: fan-out != fan-in
  # N(0, 2 / (3 * 3 * 32)), the official fan-out rule: 4,608 draws, so the sample sd is within
  # ~1% (2% at 2 sigma) of sqrt(2/288); fan-in (2/144) would give 41% more.
  assert np.std(w) == pytest.approx(np.sqrt(2 / 288), rel=0.05)
  assert np.all(f.bn_1.weight.detach().numpy() == 1)
  lin = f.linear.weight.detach().numpy()
  assert np.std(lin) == pytest.approx(np.sqrt(2 / 64), rel=0.2)  # He normal, fan-in 64


def test_translate_matches_m2m_tf_translate():
  """Without the random start both implement the same T normalised steps (the TF loss is a
  per-sample sum, the official a batch mean: after per-sample normalisation, the same step)."""
  g = _official_g()
  g_tf = models.load_torch_state_dict(models.resnet32(10), OFFICIAL_NPZ)
  x0 = np.random.default_rng(3).random((4, 32, 32, 3), np.float32)
  seed_y, target_y = np.array([0, 1, 2, 0]), np.array([9, 8, 7, 5])
  recipe = tr.Recipe(steps=3, start_noise=0.0)
  got = tr.translate(g, g, torch.from_numpy(x0.transpose(0, 3, 1, 2).copy()),
                     torch.from_numpy(seed_y), torch.from_numpy(target_y), recipe, None)
  ref = tf_translate(g_tf, g_tf, tf.constant(x0), seed_y, target_y, lam=0.5,
                     step_size=0.1, steps=3).numpy()
  got = got.numpy().transpose(0, 2, 3, 1)
  moved = np.sqrt(((got - x0) ** 2).sum(axis=(1, 2, 3)))
  assert np.all(moved > 0.15)  # three steps of L2 length 0.1, some of it clipped
  # Each step's direction agrees to float32 gradient rounding (~1e-5 relative, so ~1e-6 of a
  # 0.1 step); three steps: a few 1e-6 (measured 1.2e-7 on a Xeon). Longer chains can cross
  # ReLU kinks and clip bounds differently (T = 10: 3e-3 measured), hence T = 3.
  np.testing.assert_allclose(got, ref, atol=2e-5)


def test_choose_seeds_follows_the_official_rules():
  gen = torch.Generator().manual_seed(0)
  y = torch.arange(10).repeat(64)
  n_gen, slots, j, p = tr.choose_seeds(y, COUNTS, tr.Recipe(), gen)
  assert not torch.any(y[slots] == 0)  # the largest class keeps every slot
  assert torch.all(COUNTS[y[j]] > COUNTS[y[slots]])  # seeds only from larger classes
  expected = 1 - 0.999 ** (COUNTS[y[j]] - COUNTS[y[slots]])
  torch.testing.assert_close(p, expected)
  # P(slot generates) = 1 - N_k / N_max: 640 slots, expected 640 * mean(1 - N/5000).
  mean = float((1 - COUNTS / 5000).mean()) * 640
  assert abs(n_gen - mean) < 4 * np.sqrt(mean)
  none = tr.choose_seeds(torch.zeros(8, dtype=torch.long), COUNTS, tr.Recipe(), gen)
  assert none[0] == 0 and none[1].numel() == 0


def test_rows_are_the_tables_rows():
  assert tr.ROWS == {k: (v[1]["loss"], v[1]["method"]) for k, v in grid_tables.TABLE2_ROWS.items()
                     if k in tr.ROWS}
  assert sorted(m for loss in tr.BRANCHES.values() for m in loss) == sorted(
      method for _, method in tr.ROWS.values())


def test_selected_row_keeps_the_last_tie():
  rows = [{"epoch": e, "val_bacc": v} for e, v in ((1, 50.0), (2, 60.0), (3, 55.0), (4, 60.0))]
  assert tables.selected_row(rows)["epoch"] == 4


def _history(path):
  with open(path, newline="") as fh:
    return list(csv.DictReader(fh))


@pytest.mark.slow
def test_export_all_resume_and_report_on_cpu():
  """export -> all through the device script (decode check, phase 1, three branches, packed
  outputs) -> a resumed run equals the straight one -> report, on a few hundred images."""
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    bridge.export(tmp / "exported", g_path=OFFICIAL_NPZ)
    base = [sys.executable, "-m", "launch.torch_reference"]
    small = ["--device", "cpu", "--epochs", "3", "--deferral", "2", "--limit", "60"]
    env = dict(os.environ, OUT=str(tmp / "back"), DATA=str(tmp / "exported"),
               WORK=str(tmp / "runs"), PYTHON=sys.executable)
    subprocess.run(["bash", "launch/torch_reference/device.sh", "--seeds", "0"] + small,
                   check=True, cwd=REPO, env=env)
    assert sorted(os.listdir(tmp / "back")) == ["all.log", "runs.tgz", "states_s0.tgz"]
    with tarfile.open(tmp / "back" / "states_s0.tgz") as tar:
      assert sorted(tar.getnames()) == sorted(f"runs/{r}_s0/state.pt"
                                               for r in ("drs", "erm", "erm_phase1", "m2m"))
    with tarfile.open(tmp / "back" / "runs.tgz") as tar:
      assert not [n for n in tar.getnames() if n.endswith("state.pt")]
    machine = (tmp / "runs" / "machine.json").read_text()
    assert '"match": false' not in machine  # Pillow decodes exactly what TF decoded
    phase1 = _history(tmp / "runs" / "erm_phase1_s0" / "history.csv")
    m2m = _history(tmp / "runs" / "m2m_s0" / "history.csv")
    assert len(phase1) == 2 and len(m2m) == 3 and m2m[:2] == phase1
    assert float(m2m[2]["seeded"]) > 0 and float(phase1[1]["seeded"]) == 0
    one = [*base, "train", "--data", str(tmp / "runs_data"), "--method", "erm", "--seed", "0",
           "--out", str(tmp / "resumed")] + small
    subprocess.run(one + ["--until", "1"], check=True, cwd=REPO)
    subprocess.run(one + ["--until", "2"], check=True, cwd=REPO)
    resumed = _history(tmp / "resumed" / "history.csv")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(resumed) == strip(phase1)
    tables.collect(tmp / "runs", tmp / "collected")
    assert not list((tmp / "collected").glob("*/state.pt"))
    base_out = tables.report(tmp / "collected", tmp, tf_table=tmp / "none.csv",
                         tf_phase1=tmp / "none.csv", recipe=tr.Recipe(epochs=3, deferral=2))
    text = pathlib.Path(f"{base_out}.md").read_text()
    assert "| ERM-M2m | " in text and "(n=1)" in text
    assert os.path.exists(f"{base_out}.csv")


def test_torch_state_dict_inverts_load_torch_state_dict():
  model = models.load_torch_state_dict(models.resnet32(10), OFFICIAL_NPZ)
  back = torch_import.torch_state_dict(model)
  with np.load(OFFICIAL_NPZ) as d:
    original = {k: d[k] for k in d.files if not k.endswith("num_batches_tracked")}
  assert sorted(back) == sorted(original)
  for key, value in original.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)


TF_PHASE1 = REPO / "results" / "cifar10_jpeg_lt_full" / "erm_phase1_s0"


@pytest.mark.skipif(not (TF_PHASE1 / "ckpt" / "state-0160.json").exists(),
                    reason="the committed phase-1 state is not in this checkout")
def test_import_tf_phase1_state():
  """m2m_tf's state after 160 epochs becomes a phase-1 run: f scores m2m_tf's recorded
  validation bACC (checked inside), and every momentum buffer has its parameter's shape and is
  -m / lr of the Keras slot (spot-checked on the linear layer, whose layout is transposed)."""
  with tempfile.TemporaryDirectory() as tmp:
    out = bridge.import_tf_phase1(TF_PHASE1, pathlib.Path(tmp) / "erm_phase1_s0")
    state = torch.load(out / "state.pt")
    assert state["epochs"] == 160 and len(_history(out / "history.csv")) == 160
    f = tr.build_resnet32()
    f.load_state_dict(state["f"])
    slots = state["opt"]["state"]
    buffers = [slots[i]["momentum_buffer"] for i in range(len(slots))]
    for p, b in zip(f.parameters(), buffers):
      assert p.shape == b.shape
    tf_state = checkpoint.load_state(str(TF_PHASE1 / "ckpt" / "state-0160.json"))
    keras_slot = tf_state.optimizer_vars[-2]  # the linear kernel's slot, (in, out)
    np.testing.assert_allclose(buffers[-2].numpy(), -keras_slot.T / 0.1, rtol=1e-6)


def test_trajectories_pair_epochs_of_both_sides():
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    (tmp / "pt" / "erm_s0").mkdir(parents=True)
    tr.write_history(tmp / "pt" / "erm_s0", [{"epoch": e, "val_bacc": 60 + e / 100}
                                              for e in range(1, 201)])
    (tmp / "tf" / "erm_s0").mkdir(parents=True)
    with open(tmp / "tf" / "erm_s0" / "history.csv", "w") as fh:  # m2m_tf: epochs from 0
      fh.write("epoch,val_bacc\n" + "".join(f"{e},{50 + e / 100}\n" for e in range(165)))
    table = tables._trajectories(tmp / "pt", ["erm"], tmp / "tf", tr.Recipe())[0]
    row = [line for line in table.splitlines() if line.startswith("| ERM")][0]
    # Epoch 161 is m2m_tf's row 160; m2m_tf has 165 epochs, so epoch 170 is missing there.
    assert "| 61.61 / 51.60 |" in row and "| 61.70 / - |" in row


def test_collect_keeps_only_unfinished_states_when_asked():
  with tempfile.TemporaryDirectory() as tmp:
    src = pathlib.Path(tmp) / "src"
    for name, finished in (("erm_s0", True), ("m2m_s0", False)):
      (src / name).mkdir(parents=True)
      (src / name / "history.csv").write_text("epoch\n1\n")
      (src / name / "state.pt").write_bytes(b"state")
      if finished:
        (src / name / "result.json").write_text("{}")
    assert tables.collect(src, pathlib.Path(tmp) / "a") == ["erm_s0", "m2m_s0"]
    assert not list((pathlib.Path(tmp) / "a").glob("*/state.pt"))
    tables.collect(src, pathlib.Path(tmp) / "b", states=True)
    kept = sorted(p.parent.name for p in (pathlib.Path(tmp) / "b").glob("*/state.pt"))
    assert kept == ["m2m_s0"]


def test_resnet32_sgd_step_matches_m2m_tf_trainer():
  """A phase-1 step from the same weights and momentum: m2m_tf's trainer (Keras' SGD in its
  form, coupled weight decay, BatchNorm in training mode) and the PyTorch reference end at the
  same weights and BN statistics.

  One step, from a random momentum in both forms (b = -m / lr): over several steps, weights that
  differ by float32 rounding can give gradients that differ by far more where a BN channel's
  batch variance is small (measured on random images: 1.4e-5 after two steps with wd 2e-4,
  2e-7 with wd 2e-2), which is not a difference between the implementations.
  """
  rng = np.random.default_rng(5)
  x, y = rng.random((16, 32, 32, 3), np.float32), rng.integers(0, 10, 16)
  f_tf = models.load_torch_state_dict(models.resnet32(10), OFFICIAL_NPZ)
  trainer = M2mTrainer(f_tf, class_counts=COUNTS.int().tolist(), weight_decay=2e-4)
  trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=False)
  trainer.optimizer.build(f_tf.trainable_variables)
  layout = models.resnet32(10)  # carries the slots to PyTorch's layout
  for m, v, w in zip(trainer.optimizer.momentums, layout.trainable_variables,
                     f_tf.trainable_variables):
    slot = (rng.normal(size=w.shape) * 1e-2).astype(np.float32)
    m.assign(slot)
    v.assign(-slot / 0.1)
  buffers = torch_import.torch_state_dict(layout)
  trainer.train_on_batch(x, y)
  f_pt = _official_g().train()
  opt = torch.optim.SGD(f_pt.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
  for name, p in f_pt.named_parameters():
    opt.state[p]["momentum_buffer"] = torch.from_numpy(buffers[name])
  loss = torch.nn.functional.cross_entropy(
      f_pt(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())), torch.from_numpy(y))
  loss.backward()
  opt.step()
  got = torch_import.torch_state_dict(f_tf)
  want = {k: v.detach().numpy() for k, v in f_pt.state_dict().items()}
  for key, value in got.items():
    if key.endswith("running_var"):
      # PyTorch's running variance uses the unbiased batch variance (n / (n - 1), n = 16 * 8 * 8
      # = 1024 values per channel at the last stage), Keras' the biased one.
      np.testing.assert_allclose(value, want[key], rtol=2e-3, err_msg=key)
    else:
      # One float32 step of lr 0.1 (updates up to ~0.1): the gradients agree to ~1e-6
      # relative, so the weights to a few 1e-7 (measured <= 3e-7). A missing weight decay
      # would move weights of |w| > 0.05 by lr * wd * |w| > 1e-6.
      np.testing.assert_allclose(value, want[key], atol=1e-6, err_msg=key)


def test_ldam_loss_and_drw_weights_equal_m2m_tf():
  counts = COUNTS.double()
  np.testing.assert_allclose(tr.drw_weights(counts, 0.9999).numpy(),
                             losses.class_weights("cb", COUNTS.numpy(), beta=0.9999), rtol=1e-6)
  rng = np.random.default_rng(7)
  logits = rng.uniform(-1, 1, (64, 10)).astype(np.float32)  # cosine logits
  y = rng.integers(0, 10, 64)
  ours = losses.ldam(y, logits, COUNTS.numpy(), max_margin=0.5, scale=30.0).numpy()
  weights = torch.from_numpy(rng.uniform(0.5, 2, 10).astype(np.float32))
  got = tr.batch_loss(torch.from_numpy(logits), torch.from_numpy(y), COUNTS,
                      tr.Recipe(loss="ldam"), weights)
  # float32 losses of size ~10 (scale 30 on cosines): ~1e-6 relative.
  assert float(got) == pytest.approx(float(np.mean(weights.numpy()[y] * ours)), rel=1e-5)
  plain = tr.batch_loss(torch.from_numpy(logits), torch.from_numpy(y), COUNTS, tr.Recipe())
  assert float(plain) == pytest.approx(float(np.mean(
      losses.cross_entropy(y, logits).numpy())), rel=1e-5)


@pytest.mark.parametrize("method", ["drw", "m2m"])
def test_ldam_phase2_epoch_on_cpu(method):
  """An LDAM epoch after the deferral: f with the cosine head, DRW's weights or M2m's
  translations with the official g (plain head); the plan around it is the CE one's."""
  rng = np.random.default_rng(8)
  y = torch.from_numpy(np.repeat(np.arange(10), [8, 5, 4, 3, 3, 2, 2, 1, 1, 1]))
  data = {"x_train": torch.from_numpy(rng.integers(0, 256, (len(y), 3, 32, 32), np.uint8)),
          "y_train": y, "counts": torch.bincount(y).float()}
  recipe = tr.Recipe(loss="ldam", batch_size=32, steps=2)  # one batch, two translation steps
  f, g, opt = tr.build_models(OFFICIAL_NPZ, "cpu", 0, recipe)
  assert tuple(f.linear.weight.shape) == (64, 10)  # NormedLinear, (in, out)
  before = f.linear.weight.detach().clone()
  row = tr.train_epoch(f, g, opt, data, tr.Run(pathlib.Path("unused"), method, 0, 200),
                       recipe.deferral, recipe)
  assert np.isfinite(row["train_loss"]) and not torch.equal(before, f.linear.weight)
  assert (row["seeded"] > 0) == (method == "m2m")


def test_bad_input_gets_one_line():
  with pytest.raises(SystemExit, match="--branches drw: the ce rows are erm,drs,m2m"):
    cli.main(["all", "--out", "/nonexistent/x", "--branches", "drw", "--device", "cpu"])
  with tempfile.TemporaryDirectory() as tmp:
    with pytest.raises(SystemExit, match="no cifar10_jpeg_lt_jpeg.npz; write it with"):
      cli.main(["all", "--data", tmp, "--out", os.path.join(tmp, "runs"), "--device", "cpu"])
