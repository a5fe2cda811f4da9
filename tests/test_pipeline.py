"""Tests of m2m_tf.data.pipeline: epoch structure, balance, determinism, resume, sharding."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from m2m_tf.data import pipeline

_COUNTS = np.array([7, 120, 3, 30])  # the largest class is not class 0


def _data(counts=_COUNTS, seed=0):
  rng = np.random.default_rng(seed)
  y = np.repeat(np.arange(len(counts)), counts)
  y = y[rng.permutation(len(y))]
  x = np.arange(len(y), dtype=np.float32)[:, None]  # x holds its own index
  return x, y


def _batches(ds):
  return [(xb.numpy()[:, 0].astype(np.int64), yb.numpy()) for xb, yb in ds]


class PipelineTest(tf.test.TestCase, parameterized.TestCase):

  def test_uniform_epochs_are_permutations(self):
    x, y = _data()
    n = len(y)  # 160
    b = 16
    ds = pipeline.train_dataset(x, y, num_classes=4, batch_size=b, seed=3, epochs=3)
    batches = _batches(ds)
    steps = pipeline.steps_per_epoch(n, b)
    self.assertEqual(steps, n // b)
    self.assertLen(batches, 3 * steps)
    for e in range(3):
      idx = np.concatenate([bx for bx, _ in batches[e * steps:(e + 1) * steps]])
      self.assertAllEqual(np.sort(idx), np.arange(n))
      labels = np.concatenate([by for _, by in batches[e * steps:(e + 1) * steps]])
      self.assertAllEqual(labels, y[idx])
    for bx, by in batches:
      self.assertEqual(bx.shape, (b,))
      self.assertEqual(by.dtype, np.int32)
    # Epochs are different permutations.
    first = np.concatenate([bx for bx, _ in batches[:steps]])
    second = np.concatenate([bx for bx, _ in batches[steps:2 * steps]])
    self.assertNotAllEqual(first, second)

  def test_remainder_is_dropped(self):
    x, y = _data()
    ds = pipeline.train_dataset(x, y, num_classes=4, batch_size=48, seed=1, epochs=2)
    batches = _batches(ds)
    self.assertLen(batches, 2 * (160 // 48))
    idx = np.concatenate([bx for bx, _ in batches[:3]])
    self.assertLen(np.unique(idx), 144)  # no repeats inside an epoch

  def test_epoch_size_larger_than_n(self):
    x, y = _data()
    ds = pipeline.train_dataset(x, y, num_classes=4, batch_size=20, seed=1, epochs=1,
                                epoch_size=400)
    batches = _batches(ds)
    self.assertLen(batches, 20)
    idx = np.concatenate([bx for bx, _ in batches])
    self.assertAllEqual(np.sort(idx[:160]), np.arange(160))  # first pass is a permutation
    self.assertEqual(pipeline.steps_per_epoch(160, 20, 400), 20)

  def test_balanced_class_frequencies(self):
    x, y = _data()
    b, epochs = 16, 30
    ds = pipeline.train_dataset(x, y, num_classes=4, batch_size=b, seed=5, epochs=epochs,
                                balanced_from_epoch=0)
    batches = _batches(ds)
    self.assertLen(batches, epochs * (160 // b))
    idx = np.concatenate([bx for bx, _ in batches])
    labels = np.concatenate([by for _, by in batches])
    self.assertAllEqual(labels, y[idx])
    n = len(labels)
    sd = np.sqrt(n * 0.25 * 0.75)
    for k in range(4):
      self.assertLess(abs(np.sum(labels == k) - n / 4), 4 * sd, f"class {k}")
    freq = pipeline.class_frequencies(labels, 4)
    # Statistical (fixed seed): the frequency of each class over n = 4800 draws
    # has sd sqrt(0.25 * 0.75 / n) = 6.3e-3, so 0.04 is 6 sd; measured 4.8e-3.
    self.assertAllClose(freq, np.full(4, 0.25), atol=0.04)
    # Within a class, examples are uniform: every example of the small class 2
    # (3 examples) appears about n/12 times.
    small = idx[labels == 2]
    m = len(small)
    for i in np.flatnonzero(y == 2):
      self.assertLess(abs(np.sum(small == i) - m / 3), 4 * np.sqrt(m * (1 / 3) * (2 / 3)))

  def test_balanced_from_epoch(self):
    x, y = _data()
    b, steps = 16, 10
    ds = pipeline.train_dataset(x, y, num_classes=4, batch_size=b, seed=2, epochs=5,
                                balanced_from_epoch=2)
    batches = _batches(ds)
    for e in range(5):
      idx = np.concatenate([bx for bx, _ in batches[e * steps:(e + 1) * steps]])
      is_perm = np.array_equal(np.sort(idx), np.arange(160))
      self.assertEqual(is_perm, e < 2, f"epoch {e}")
    late = np.concatenate([by for _, by in batches[2 * steps:]])
    self.assertGreater(np.mean(late == 2), 0.15)  # class 2 is 3/160 of the data

  @parameterized.parameters(None, 0)
  def test_determinism_and_resume(self, balanced_from):
    x, y = _data()
    kw = dict(num_classes=4, batch_size=16, seed=7, epochs=4, balanced_from_epoch=balanced_from)
    full = _batches(pipeline.train_dataset(x, y, **kw))
    again = _batches(pipeline.train_dataset(x, y, **kw))
    for (a, _), (b, _) in zip(full, again):
      self.assertAllEqual(a, b)
    tail = _batches(pipeline.train_dataset(x, y, start_epoch=2, **kw))
    self.assertLen(tail, 20)
    for (a, ay), (b, by) in zip(full[20:], tail):
      self.assertAllEqual(a, b)
      self.assertAllEqual(ay, by)
    other_seed = _batches(pipeline.train_dataset(x, y, **dict(kw, seed=8)))
    self.assertNotAllEqual(np.concatenate([a for a, _ in full]),
                           np.concatenate([a for a, _ in other_seed]))
    self.assertNotAllEqual(full[0][0], full[10][0])  # epoch 0 vs epoch 1

  def test_balanced_indices_function_of_seed_and_epoch(self):
    _, y = _data()
    sampler = pipeline.BalancedSampler(y, 4)
    a = sampler.indices(64, 3, 5).numpy()
    self.assertAllEqual(a, sampler.indices(64, 3, 5).numpy())
    self.assertNotAllEqual(a, sampler.indices(64, 3, 6).numpy())
    self.assertNotAllEqual(a, sampler.indices(64, 4, 5).numpy())

  def test_balanced_sampler_empty_class(self):
    with self.assertRaisesRegex(ValueError, r"classes \[2\]"):
      pipeline.BalancedSampler(np.array([0, 1, 1, 3]), 4)

  def test_bad_inputs(self):
    x, y = _data()
    with self.assertRaisesRegex(ValueError, "lengths differ"):
      pipeline.train_dataset(x[:-1], y, num_classes=4, batch_size=16, seed=0, epochs=1)
    with self.assertRaisesRegex(ValueError, "Labels"):
      pipeline.train_dataset(x, y, num_classes=3, batch_size=16, seed=0, epochs=1)
    with self.assertRaisesRegex(ValueError, "batch_size"):
      pipeline.train_dataset(x, y, num_classes=4, batch_size=161, seed=0, epochs=1)
    x_bad = np.array(x, np.float32)
    x_bad[7, 0] = np.inf
    with self.assertRaisesRegex(ValueError, r"NaN/Inf in 1 examples \(first: index 7\)"):
      pipeline.train_dataset(x_bad, y, num_classes=4, batch_size=16, seed=0, epochs=1)
    ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                     num_replicas_in_sync=3)
    with self.assertRaisesRegex(ValueError, "divisible"):
      pipeline.train_dataset(x, y, num_classes=4, batch_size=16, seed=0, epochs=1,
                             input_context=ctx)

  @parameterized.parameters((2, 2), (2, 4), (1, 2), (4, 4))
  def test_input_context_shards_cover_the_global_batch(self, pipelines, replicas):
    x, y = _data()
    b = 16
    kw = dict(num_classes=4, batch_size=b, seed=11, epochs=2, balanced_from_epoch=1)
    full = _batches(pipeline.train_dataset(x, y, **kw))
    local = replicas // pipelines
    per_replica = b // replicas
    shards = []
    for p in range(pipelines):
      ctx = tf.distribute.InputContext(num_input_pipelines=pipelines, input_pipeline_id=p,
                                       num_replicas_in_sync=replicas)
      shard = _batches(pipeline.train_dataset(x, y, input_context=ctx, **kw))
      self.assertLen(shard, len(full) * local)
      for bx, _ in shard:
        self.assertEqual(bx.shape, (per_replica,))
      shards.append(shard)
    for step, (gx, gy) in enumerate(full):
      parts = [shards[p][step * local + r] for p in range(pipelines) for r in range(local)]
      self.assertAllEqual(np.concatenate([px for px, _ in parts]), gx)
      self.assertAllEqual(np.concatenate([py for _, py in parts]), gy)

  @parameterized.parameters((2, 2), (2, 4), (1, 2), (4, 4))
  def test_shards_are_augmented_as_the_global_batch(self, pipelines, replicas):
    # The augmentation draws of a row are those of its place in the global batch, whatever the
    # number of workers (pipelines) and replicas: a run can resume on another number of them.
    _, y = _data()
    x = np.random.default_rng(4).integers(0, 256, (len(y), 8, 8, 3), dtype=np.uint8)
    kw = dict(num_classes=4, batch_size=16, seed=11, epochs=2, balanced_from_epoch=1,
              augment=True)
    full = [xb.numpy() for xb, _ in pipeline.train_dataset(x, y, **kw)]
    local = replicas // pipelines
    shards = [[xb.numpy() for xb, _ in pipeline.train_dataset(
        x, y, input_context=tf.distribute.InputContext(pipelines, p, replicas), **kw)]
              for p in range(pipelines)]
    for step, gx in enumerate(full):
      parts = [shards[p][step * local + r] for p in range(pipelines) for r in range(local)]
      self.assertAllEqual(np.concatenate(parts), gx)



class AugmentTest(tf.test.TestCase):

  def test_crop_flip_reference(self):
    rng = np.random.default_rng(0)
    images = rng.uniform(0.05, 1.0, (64, 8, 8, 3)).astype(np.float32)
    out = pipeline.augment_images(tf.constant(images), tf.constant([3, 4], tf.int64)).numpy()
    self.assertEqual(out.shape, images.shape)
    self.assertAllInRange(out, 0.0, 1.0)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    seen_flip, seen_shift, seen_zero = set(), set(), False
    for i in range(64):
      matches = []
      for dy in range(9):
        for dx in range(9):
          crop = padded[i, dy:dy + 8, dx:dx + 8]
          for flip in (False, True):
            if np.array_equal(out[i], crop[:, ::-1] if flip else crop):
              matches.append((dy, dx, flip))
      self.assertNotEmpty(matches, f"image {i} is not a padded crop (or its flip)")
      dy, dx, flip = matches[0]
      seen_flip.add(flip)
      seen_shift.add((dy, dx))
      seen_zero |= (dy != 4 or dx != 4)
    self.assertEqual(seen_flip, {False, True})
    self.assertGreater(len(seen_shift), 20)
    self.assertTrue(seen_zero)
    # Zero padding: shifted images contain exact zeros, none were in the input.
    self.assertTrue(np.any(out == 0.0))

  def test_deterministic_in_seed(self):
    images = tf.random.stateless_uniform([8, 6, 6, 1], seed=[1, 1])
    a = pipeline.augment_images(images, tf.constant([1, 2], tf.int64))
    b = pipeline.augment_images(images, tf.constant([1, 2], tf.int64))
    c = pipeline.augment_images(images, tf.constant([1, 3], tf.int64))
    self.assertAllEqual(a, b)
    self.assertNotAllEqual(a, c)

  def test_train_dataset_scales_and_augments_uint8(self):
    rng = np.random.default_rng(1)
    x = rng.integers(1, 256, (40, 8, 8, 3), dtype=np.uint8)
    y = np.arange(40) % 2
    plain = list(pipeline.train_dataset(x, y, num_classes=2, batch_size=8, seed=0, epochs=1))
    aug = list(pipeline.train_dataset(x, y, num_classes=2, batch_size=8, seed=0, epochs=1,
                                      augment=True))
    for (px, py), (ax, ay) in zip(plain, aug):
      self.assertEqual(px.dtype, tf.float32)
      self.assertAllInRange(px, 1 / 255 - 1e-7, 1.0)
      self.assertAllEqual(py, ay)
      self.assertEqual(ax.shape, px.shape)
      self.assertAllInRange(ax, 0.0, 1.0)
    self.assertTrue(any(np.any(ax.numpy() == 0.0) for ax, _ in aug))

  def test_eval_dataset(self):
    x = np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2, 1)
    y = np.arange(10)
    got = list(pipeline.eval_dataset(x, y, batch_size=4))
    self.assertLen(got, 3)
    # uint8 / 255 in float32: within u32 = 6e-8 relative of the float64 value.
    self.assertAllClose(np.concatenate([a.numpy() for a, _ in got]), x / 255.0)
    self.assertAllEqual(np.concatenate([b.numpy() for _, b in got]), y)
    only_x = list(pipeline.eval_dataset(x.astype(np.float32), batch_size=4))
    self.assertAllEqual(np.concatenate([a.numpy() for a in only_x]), x.astype(np.float32))


if __name__ == "__main__":
  tf.test.main()
