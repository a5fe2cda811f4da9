"""MirroredStrategy over two logical CPU devices gives the single-device M2m training.

The logical devices must be configured before TensorFlow initialises, so the
comparison runs in a subprocess. It fits the same M2mTrainer (M2m phase 2 on
from epoch 1, coupled weight decay, momentum, class weights; jit_compile=False,
as docs/platform.md says XLA fails on 2 logical CPUs) once with the default strategy
and once with MirroredStrategy on the same global batches, and compares the
loss history, the M2m statistics and the final weights.

Two configurations. "general" is M2m as it runs (seeds from the batch, the
Bernoulli rejection, a random start, the gamma test): each replica rewrites the
gathered global batch with the step's draws, so the choices must equal the
single-device ones exactly. "batch" and "weights" (the two loss reductions;
"la_weights": "weights" with the logit-adjusted loss) also make the generation
deterministic without disabling any part of it:
class 1 generates with probability 1 - 1e-5 and classes 0 and 2 never do; the
seed set is a fixed pool of one class-0 example, beta = 0 gives w_ij = 1 (so
the Bernoulli draw always passes) and gamma = 0 accepts every
translation. The translation itself (T steps against the current f and the
frozen g) is deterministic, so every class-1 slot becomes x* computed from the
replica's own copy of f.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

# End-to-end: real training runs or subprocesses (skipped by the fast run: -m 'not slow').
pytestmark = pytest.mark.slow

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent("""
    import json
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    import numpy as np
    from m2m_tf.m2m.generation import M2mConfig
    from m2m_tf.training import callbacks as cb
    from m2m_tf.training.trainer import M2mTrainer

    D, K, B = 8, 3, 16
    counts = np.array([100000, 1, 100000])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, D)).astype(np.float32)
    y = np.tile(np.arange(K), 22)[:64].astype(np.int32)
    pool = (x[:1], np.zeros(1, np.int32))
    keras.utils.set_random_seed(0)
    def mlp():
      return keras.Sequential([keras.Input((D,)), keras.layers.Dense(16, activation="relu"),
                               keras.layers.Dense(K)])
    init_f = mlp().get_weights()
    init_g = [w * 3 for w in mlp().get_weights()]

    def fit(strategy, reduction):
      general = reduction == "general"
      with strategy.scope():
        f, g = mlp(), mlp()
        f.set_weights(init_f)
        g.set_weights(init_g)
        if general:  # M2m as it runs: seeds from the batch, rejection, random start
          config = M2mConfig(beta=0.999, gamma=0.3, lam=0.5, steps=3, step_size=0.1,
                             start_noise=0.5, n_buckets=4)
          kw = dict(class_counts=[400, 60, 9], loss_reduction="batch")
        else:
          config = M2mConfig(beta=0.0, gamma=0.0, lam=0.5, steps=3, step_size=0.1,
                             start_noise=0.0, n_buckets=4)
          # "la_weights": the logit-adjusted loss (tau 1: class 1's log prior is -12.2) with the
          # "weights" reduction, through the same per-example loss path.
          la = reduction == "la_weights"
          kw = dict(class_counts=counts, seed_pool=pool,
                    loss_reduction="weights" if la else reduction,
                    loss="logit_adjusted" if la else "ce")
        trainer = M2mTrainer(f, g, m2m=config, weight_decay=0.01, class_weight=[1.0, 2.0, 0.5],
                             seed=1, **kw)
        trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=False)
        trainer.build((None, D))
      ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(B, drop_remainder=True).repeat()
      hist = trainer.fit(ds, epochs=2, steps_per_epoch=4, verbose=0,
                         callbacks=[cb.PhaseSchedule(1)])
      return {"history": {k: [float(v) for v in vals] for k, vals in hist.history.items()},
              "weights": [w.tolist() for w in f.get_weights()],
              "g": [w.tolist() for w in g.get_weights()],
              "init_f": [w.tolist() for w in init_f],
              "replicas": strategy.num_replicas_in_sync}

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {r: {"default": fit(tf.distribute.get_strategy(), r), "mirrored": fit(mirrored, r)}
           for r in sys.argv[1:]}
    print("RESULT" + json.dumps(out))
""")


class MirroredStrategyTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    env = dict(os.environ, PYTHONPATH=_REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cls.proc = subprocess.run([sys.executable, "-c", _SCRIPT, "batch", "weights", "general",
                               "la_weights"],
                              capture_output=True, text=True, env=env, cwd=_REPO, timeout=300)

  @parameterized.parameters("batch", "weights", "la_weights")
  def test_mirrored_matches_single_device(self, reduction):
    proc = self.proc
    self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
    out = json.loads(proc.stdout.split("RESULT", 1)[1])[reduction]
    single, mirrored = out["default"], out["mirrored"]
    self.assertEqual(single["replicas"], 1)
    self.assertEqual(mirrored["replicas"], 2)
    hs, hm = single["history"], mirrored["history"]
    # Phase 1 generates nothing; phase 2 turns every class-1 slot (21 of the
    # 64 examples of the epoch) into an accepted x*.
    self.assertEqual(hs["gen_slots"][0], 0.0)
    self.assertEqual(hs["accepted"][1], 21.0)
    self.assertEqual(hs["accepted"][1], hs["gen_slots"][1])
    for key in ("gen_slots", "candidates", "accepted"):
      self.assertAllClose(hm[key], hs[key], atol=0, msg=key)
    # float32 (u32 = 2^-24 = 6e-8). The replicas compute the same per-example
    # values on 8-row halves and all-reduce them: only the 16-term batch sums
    # are reassociated, <= ~16 u32 = 1e-6 of each gradient (|g| <~ 1). Over the
    # 8 SGD steps (lr 0.1, momentum 0.9: each gradient counts up to
    # 1 / (1 - 0.9) = 10 times) the weights drift apart by <= 8 * 0.1 * 10 *
    # 1e-6 = 8e-6 at worst, against 1e-5 + 1e-5 |w|; the loss history likewise.
    # Measured (oneDNN on and off): 6e-3 and 5e-3 of the tolerance (~1e-7).
    # Premise: no hidden ReLU is within ~1e-6 of its kink, where a flip would
    # change a weight gradient discontinuously (~1e-3 after lr): ~1e4
    # pre-activations, so a chance of ~1e-3, fixed for these seeds. (A
    # replica-local loss denominator is off by > 1e-3: test_losses.) The
    # accuracy is a ratio of counts: equal unless a prediction flips (measured equal).
    self.assertAllClose(hm["loss"], hs["loss"], atol=1e-5, rtol=1e-5, msg="loss")
    self.assertAllClose(hm["accuracy"], hs["accuracy"], atol=1e-6, msg="accuracy")
    for a, b in zip(single["weights"], mirrored["weights"]):
      self.assertAllClose(np.array(a), np.array(b), atol=1e-5, rtol=1e-5)
    for a, b in zip(single["g"], mirrored["g"]):
      self.assertAllEqual(np.array(a), np.array(b))
    # Training moved f well beyond the tolerance.
    self.assertNotAllClose(np.array(single["weights"][0]), np.array(single["init_f"][0]), atol=1e-3)
    if reduction == "la_weights":  # and the logit-adjusted loss is not CE's
      ce = json.loads(proc.stdout.split("RESULT", 1)[1])["weights"]["default"]["history"]
      self.assertGreater(abs(hs["loss"][0] - ce["loss"][0]), 1.0)


  def test_mirrored_m2m_makes_the_single_device_choices(self):
    # Seeds drawn from the batch with beta < 1, the Bernoulli rejection, a random start and the
    # gamma test, nothing fixed: each replica rewrites the gathered global batch with the step's
    # draws and keeps its slice, so every choice is the single-device one. The counts are of
    # the global batch, so they agree exactly; the weights as in the test above (the same
    # reassociated sums; a flipped acceptance would change a count, which is compared exactly).
    self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-4000:])
    out = json.loads(self.proc.stdout.split("RESULT", 1)[1])["general"]
    hs, hm = out["default"]["history"], out["mirrored"]["history"]
    self.assertGreater(hs["accepted"][1], 0.0)  # M2m did rewrite samples
    self.assertLess(hs["accepted"][1], hs["gen_slots"][1])  # and rejected some
    for key in ("gen_slots", "candidates", "accepted"):
      self.assertAllClose(hm[key], hs[key], atol=0, msg=key)
    self.assertAllClose(hm["loss"], hs["loss"], atol=1e-5, rtol=1e-5, msg="loss")
    for a, b in zip(out["default"]["weights"], out["mirrored"]["weights"]):
      self.assertAllClose(np.array(a), np.array(b), atol=1e-5, rtol=1e-5)


if __name__ == "__main__":
  tf.test.main()
