"""Tests of m2m_tf.training.checkpoint: commit records, verification, fallback, pruning."""

import json
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from m2m_tf import models
from m2m_tf.errors import CheckpointError
from m2m_tf.training import callbacks as cb
from m2m_tf.training import checkpoint as ckpt_lib
from m2m_tf.training.trainer import M2mTrainer


def _trainer(seed=0):
  keras.utils.set_random_seed(seed)
  f = models.build_model("mlp", (4,), 3, hidden_units=(5,), name="f")
  t = M2mTrainer(f, class_counts=[5, 3, 2])
  t.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
  t.build((None, 4))
  t.optimizer.build(f.trainable_variables)
  return t


def _evaluation():
  x = np.zeros((3, 4), np.float32)
  return cb.BalancedEvaluation({"val": (x, np.arange(3))}, [5, 3, 2])


class CheckpointTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp()
    self.trainer = _trainer()
    self.ev = _evaluation()
    self.ckpt = ckpt_lib.RunCheckpoint(self.dir, self.ev, keep_epochs=(1,))
    self.ckpt.set_model(self.trainer)

  def _epoch(self, epoch, improve=True):
    # Changes every weight and the optimizer's momentum, as a training epoch would.
    for v in self.trainer.f.trainable_variables:
      v.assign(v + 0.5)
    for v in self.trainer.optimizer.variables:
      v.assign(v + 1.0)
    if improve:
      self.ev.best_epoch, self.ev.best_score = epoch, float(epoch)
      self.ev.best_summaries = {"val": {"bacc": float(epoch)}}
      self.ev.best_weights = self.trainer.f.get_weights()
    self.ckpt.on_epoch_begin(epoch)
    self.ckpt.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "val_bacc": float(epoch)})

  def _fresh(self):
    trainer, ev = _trainer(seed=1), _evaluation()
    return trainer, ev, ckpt_lib.RunCheckpoint(self.dir, ev, keep_epochs=(1,))

  def test_restore_is_exact(self):
    for e in range(3):
      self._epoch(e)
    expected_f = self.trainer.f.get_weights()
    expected_opt = [v.numpy() for v in self.trainer.optimizer.variables]
    trainer, ev, ckpt = self._fresh()
    self.assertEqual(ckpt.restore(trainer), 3)
    for a, b in zip(trainer.f.get_weights(), expected_f):
      self.assertAllEqual(a, b)
    for a, b in zip(trainer.optimizer.variables, expected_opt):
      self.assertAllEqual(a.numpy(), b)
    self.assertEqual(ev.best_epoch, 2)
    self.assertEqual([r["epoch"] for r in ckpt.history], [0, 1, 2])
    with open(os.path.join(self.dir, "history.csv")) as fh:
      self.assertEqual(fh.read().splitlines()[0], "epoch,loss,val_bacc")

  def test_a_branch_whose_best_is_before_it_writes_the_best_files(self):
    # A row branched after epoch 2 of a run whose best epoch is 1, and never beaten after:
    # its folder holds that best f and its record from the branch commit on (it once had none,
    # so a finished row kept no weights of its own).
    self._epoch(0)
    self._epoch(1)
    self._epoch(2, improve=False)
    best_f = self.ev.best_weights
    source = ckpt_lib.load_state(ckpt_lib.record_path(self.dir, 3))
    branch_dir = tempfile.mkdtemp()
    trainer, ev = _trainer(seed=1), _evaluation()
    ckpt = ckpt_lib.RunCheckpoint(branch_dir, ev)
    ckpt.set_model(trainer)
    ckpt.apply(trainer, source)
    ckpt.commit(3)
    saved = os.path.join(branch_dir, ckpt_lib.BEST_WEIGHTS_FILE)
    f = models.build_model("mlp", (4,), 3, hidden_units=(5,), name="f")
    f.load_weights(saved)
    for a, b in zip(f.get_weights(), best_f):
      self.assertAllEqual(a, b)
    with open(os.path.join(branch_dir, ckpt_lib.BEST_STATE_FILE)) as fh:
      best_state = json.load(fh)
    self.assertEqual((best_state["best_epoch"], best_state["epochs_done"]), (1, 3))
    # Its own epochs that do not beat it leave the files as they are.
    before = os.path.getmtime(saved)
    ckpt.on_epoch_begin(3)
    ckpt.on_epoch_end(3, {"loss": 0.1, "val_bacc": 0.0})
    self.assertEqual(os.path.getmtime(saved), before)

  def test_each_epoch_records_its_machine(self):
    for e in range(2):
      self._epoch(e)
    record = ckpt_lib.read_record(ckpt_lib.record_path(self.dir, 2))
    self.assertEqual(record["epoch_machines"], [ckpt_lib.machine_name()] * 2)
    self.assertRegex(ckpt_lib.machine_name(), r", \d+ cores$")
    # A record written before the field existed restores as "not recorded", then grows.
    del record["epoch_machines"]
    with open(ckpt_lib.record_path(self.dir, 2), "w") as fh:
      json.dump(record, fh)
    trainer, _, ckpt = self._fresh()
    self.assertEqual(ckpt.restore(trainer), 2)
    self.assertEqual(ckpt.epoch_machines, [None, None])
    ckpt.on_epoch_begin(2)
    ckpt.on_epoch_end(2, {"loss": 0.5, "val_bacc": 2.0})
    self.assertEqual(ckpt.epoch_machines, [None, None, ckpt_lib.machine_name()])

  def test_damaged_newest_falls_back_to_previous(self):
    for e in range(3):
      self._epoch(e)
    after_two = None
    records = ckpt_lib.committed_records(os.path.join(self.dir, "ckpt"))
    self.assertEqual([n for n, _ in records], [3, 2, 1])  # 2 newest + the kept branch point
    after_two = ckpt_lib.load_state(records[1][1]).f_weights
    with open(os.path.join(self.dir, "ckpt", "state-0003.npz"), "r+b") as fh:
      fh.seek(100)
      fh.write(b"\x00garbage\x00")
    trainer, _, ckpt = self._fresh()
    with self.assertLogs(level="WARNING") as logs:
      self.assertEqual(ckpt.restore(trainer), 2)
    self.assertIn("sha256", "\n".join(logs.output))
    for a, b in zip(trainer.f.get_weights(), after_two):
      self.assertAllEqual(a, b)

  def test_all_damaged_is_an_error_never_fresh_weights(self):
    self._epoch(0)
    self._epoch(1)
    for name in os.listdir(os.path.join(self.dir, "ckpt")):
      if name.endswith(".json"):
        with open(os.path.join(self.dir, "ckpt", name), "w") as fh:
          fh.write("{ torn")
    trainer, _, ckpt = self._fresh()
    with self.assertRaisesRegex(CheckpointError, "no usable checkpoint.*--overwrite"):
      ckpt.restore(trainer)

  def test_missing_best_file_is_damage(self):
    self._epoch(0)
    self._epoch(1, improve=False)
    os.remove(os.path.join(self.dir, "ckpt", "best-e0000.npz"))
    trainer, _, ckpt = self._fresh()
    with self.assertRaisesRegex(CheckpointError, "best-e0000.npz is missing"):
      ckpt.restore(trainer)

  def test_other_model_refused_with_shapes(self):
    self._epoch(0)
    keras.utils.set_random_seed(0)
    f = models.build_model("mlp", (4,), 3, hidden_units=(7,), name="f")
    t = M2mTrainer(f, class_counts=[5, 3, 2])
    t.compile(optimizer=keras.optimizers.SGD(0.1))
    t.build((None, 4))
    ckpt = ckpt_lib.RunCheckpoint(self.dir, _evaluation())
    with self.assertRaisesRegex(CheckpointError, r"shape \(4, 7\), the checkpoint \(4, 5\)"):
      ckpt.restore(t)

  def test_orphans_and_temporaries_removed(self):
    self._epoch(0)
    ckpt_dir = os.path.join(self.dir, "ckpt")
    for name in ("state-0002.npz", ".tmp-abc.npz"):  # a kill before the record / mid-write
      open(os.path.join(ckpt_dir, name), "w").close()
    os.makedirs(os.path.join(self.dir, ".tmp-saved_modelxyz"))  # a kill during the export
    trainer, _, ckpt = self._fresh()
    self.assertEqual(ckpt.restore(trainer), 1)
    self.assertCountEqual(os.listdir(ckpt_dir), ["state-0001.npz", "state-0001.json",
                                                 "best-e0000.npz"])
    self.assertFalse(os.path.exists(os.path.join(self.dir, ".tmp-saved_modelxyz")))

  def test_finalize_keeps_only_branch_points(self):
    for e in range(4):
      self._epoch(e, improve=e < 1)
    self.ckpt.finalize()
    self.assertCountEqual(os.listdir(os.path.join(self.dir, "ckpt")),
                          ["state-0001.npz", "state-0001.json", "best-e0000.npz"])
    ckpt = ckpt_lib.RunCheckpoint(tempfile.mkdtemp(), _evaluation())
    ckpt.finalize()  # nothing to keep, no ckpt/ folder: no error

  def test_best_state_matches_best_weights(self):
    self._epoch(0)
    self._epoch(1, improve=False)
    import json
    with open(os.path.join(self.dir, "best_state.json")) as fh:
      state = json.load(fh)
    self.assertEqual(state["best_epoch"], 0)
    self.assertEqual(state["weights_sha256"],
                     ckpt_lib.file_sha256(os.path.join(self.dir, "best_f.weights.h5")))


if __name__ == "__main__":
  tf.test.main()
