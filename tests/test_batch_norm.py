"""`m2m_tf.models.batch_norm`: one device keeps Keras' BatchNorm; several replicas synchronize it.

The multi-replica equality itself (2 mirrored CPUs and 2 workers against one device) is
tests/test_sync_batchnorm.py; here: the default rule, the one-replica computation, the
unchanged weights of the ResNets, and BatchNorm folding of synchronized layers.
"""

import keras
import numpy as np
import tensorflow as tf

from m2m_tf import models
from m2m_tf.models import batch_norm
from m2m_tf.models import conv_bn


def _batch_norms(model):
  return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


class BatchNormTest(tf.test.TestCase):

  def test_one_replica_keeps_keras_batchnorm(self):
    model = models.resnet32(10)
    bns = _batch_norms(model)
    self.assertLen(bns, 31)
    self.assertTrue(all(isinstance(b, batch_norm.BatchNormalization) for b in bns))
    self.assertEqual({b.synchronized for b in bns}, {False})  # built outside any strategy
    with batch_norm.synchronization(True):
      self.assertEqual({b.synchronized for b in _batch_norms(models.resnet32(10))}, {True})
    self.assertFalse(batch_norm.BatchNormalization().synchronized)  # the override has ended

  def test_global_moments_without_replicas_are_tf_moments(self):
    x = tf.constant(np.random.default_rng(0).normal(1.0, 2.0, (4, 5, 5, 3)), tf.float32)
    for got, want in zip(batch_norm.global_moments(x, [0, 1, 2]), tf.nn.moments(x, [0, 1, 2])):
      self.assertAllEqual(got, want)

  def test_synchronized_layer_trains_as_keras_on_one_replica(self):
    x = tf.constant(np.random.default_rng(1).normal(0.5, 1.5, (6, 4, 4, 2)), tf.float32)
    plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    ours = batch_norm.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=True)
    self.assertAllEqual(ours(x, training=True), plain(x, training=True))
    self.assertAllEqual(ours.moving_variance, plain.moving_variance)

  def test_cifar_resnet_depths(self):
    r32 = models.resnet32(10)
    same = models.cifar_resnet(10, depth=32)
    self.assertEqual([w.path for w in same.weights], [w.path for w in r32.weights])
    r8 = models.cifar_resnet(3, depth=8, input_shape=(16, 16, 3))
    self.assertEqual(r8.name, "resnet8")
    self.assertLen(_batch_norms(r8), 7)
    for depth in (6, 9, 31):
      with self.assertRaisesRegex(ValueError, "6 n \\+ 2"):
        models.cifar_resnet(3, depth=depth)

  def test_synchronized_model_folds(self):
    with batch_norm.synchronization(True):
      model = models.cifar_resnet(3, depth=8, input_shape=(16, 16, 3))
    rng = np.random.default_rng(2)
    for bn in _batch_norms(model):  # running statistics as after training
      bn.moving_mean.assign(rng.normal(0, 0.3, bn.moving_mean.shape[0]))
      bn.moving_variance.assign(rng.uniform(0.3, 3.0, bn.moving_variance.shape[0]))
    self.assertLen(conv_bn.folded_weights(model.layers), 7)
    x = tf.constant(rng.uniform(0, 1, (4, 16, 16, 3)), tf.float32)
    folded = models.inference_fn(model)
    self.assertIsNot(folded, model)
    self.assertAllClose(folded(x), model(x, training=False), rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
  tf.test.main()
