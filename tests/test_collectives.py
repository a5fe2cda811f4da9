"""Tests of m2m_tf.training.collectives.all_gather_rows."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from m2m_tf.training import collectives

# Two logical CPUs must be set before TensorFlow initialises: a subprocess.
_MIRRORED = textwrap.dedent("""
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from m2m_tf.training import collectives
    strat = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def replica_fn():
      r = tf.distribute.get_replica_context().replica_id_in_sync_group
      x = tf.reshape(tf.range(6, dtype=tf.float32), [3, 2]) + 100.0 * tf.cast(r, tf.float32)
      y = tf.fill([3], tf.cast(r, tf.int64) - 7)
      return collectives.all_gather_rows(x), collectives.all_gather_rows(y)

    out = strat.run(tf.function(replica_fn))
    print(json.dumps([[v.numpy().tolist() for v in strat.experimental_local_results(o)]
                      for o in out]))
""")


class AllGatherRowsTest(tf.test.TestCase):

  def test_default_strategy_is_the_identity(self):
    x = tf.constant([[1.5, -2.0], [3.0, 4.0]])
    self.assertAllEqual(collectives.all_gather_rows(x), x)

  @pytest.mark.slow
  def test_two_replicas_stack_in_replica_order_exactly(self):
    out = subprocess.run([sys.executable, "-c", _MIRRORED], capture_output=True, text=True,
                         check=True)
    xs, ys = json.loads(out.stdout.strip().splitlines()[-1])
    base = np.arange(6, dtype=np.float32).reshape(3, 2)
    want_x = np.concatenate([base, base + 100.0])
    want_y = np.array([-7] * 3 + [-6] * 3)
    for replica in range(2):  # every replica holds the whole, exactly (v + 0 = v)
      self.assertAllEqual(np.array(xs[replica]), want_x)
      self.assertAllEqual(np.array(ys[replica]), want_y)


if __name__ == "__main__":
  tf.test.main()
