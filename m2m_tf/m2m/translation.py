"""The translation x_j -> x* of M2m (paper eq. 3) and its random starts: T normalised gradient
steps on CE(g(x), y_i) + lam * f(x)[y_j], summed per sample. See
docs/method.md#step-4-translation, docs/method.md#the-random-start and difference 5 of
docs/method.md#deliberate-differences-from-the-official-code-and-why.
"""

import tensorflow as tf


def _per_sample_l2(t: tf.Tensor) -> tf.Tensor:
  """||t_b||_2 over all non-batch axes, shaped [B, 1, ..., 1] to broadcast."""
  axes = list(range(1, len(t.shape)))
  return tf.sqrt(tf.reduce_sum(tf.square(t), axis=axes, keepdims=True))


START_NOISE_MODES = ("official", "per_sample")


def random_start(x0: tf.Tensor, radius: float, seed: tf.Tensor) -> tf.Tensor:
  """The per-sample start (ours): x0 + delta, ||delta_b||_2 = radius * u_b, u_b ~ U(0, 1), in a
  Gaussian direction.

  Args:
    x0: [B, ...] float32 seeds.
    radius: the largest L2 norm of delta (`start_noise`; the official code uses 0.5).
    seed: int32/int64 tensor of shape [2], a stateless (philox) seed.
  Returns:
    x0 + delta, not yet clipped.
  """
  seeds = tf.random.experimental.stateless_split(seed, 2)
  direction = tf.random.stateless_normal(tf.shape(x0), seed=seeds[0], alg="philox")
  direction = direction / tf.maximum(_per_sample_l2(direction), 1e-12)
  batch_shape = tf.concat([tf.shape(x0)[:1], tf.ones([len(x0.shape) - 1], tf.int32)], 0)
  u = tf.random.stateless_uniform(batch_shape, seed=seeds[1], alg="philox")
  return x0 + radius * u * direction


def official_start(x0: tf.Tensor, radius: float, seed: tf.Tensor, rows=None) -> tf.Tensor:
  """The official start: x0 + delta, delta ~ U(-0.5, 0.5) per element, then each channel slice
  (the last axis) over the rows `rows` scaled to L2 norm <= radius (PyTorch's `renorm`).

  Args:
    x0: [B, ..., C] float32 seeds.
    radius: maxnorm (`start_noise`).
    seed: a stateless (philox) seed, shape [2].
    rows: [B] bool, the rows the official code translates together (None: all). The other
      rows get the same per-channel factors; their starts are never used.
  Returns:
    x0 + delta, not yet clipped.
  """
  noise = tf.random.stateless_uniform(tf.shape(x0), seed=seed, alg="philox") - 0.5
  inside = noise
  if rows is not None:
    inside = noise * tf.reshape(tf.cast(rows, noise.dtype), [-1] + [1] * (len(x0.shape) - 1))
  norm = tf.sqrt(tf.reduce_sum(tf.square(inside), axis=list(range(len(x0.shape) - 1))))
  factor = tf.where(norm > radius, radius / (norm + 1e-7), tf.ones_like(norm))
  return x0 + noise * factor


def start_point(x0: tf.Tensor, radius: float, seed: tf.Tensor, mode: str, rows=None):
  """x0 plus the random start of `mode` ("official" or "per_sample"), not yet clipped."""
  if mode == "official":
    return official_start(x0, radius, seed, rows)
  if mode == "per_sample":
    return random_start(x0, radius, seed)
  raise ValueError(f"start_noise_mode must be one of {list(START_NOISE_MODES)}, got {mode!r}.")


def translate(g, f, x0, seed_labels, target_labels, *, lam, step_size, steps,
              clip_min=0.0, clip_max=1.0, start_noise=0.0, seed=None,
              start_noise_mode="official"):
  """Translates seeds x0 (of class `seed_labels`) towards `target_labels`, without acceptance.

  Usable eagerly and inside `tf.function` (with or without XLA); f and g run with
  `training=False` and are not changed.

  Args:
    g: the frozen classifier, a callable `g(x, training=False) -> logits`.
    f: the classifier being trained, same calling convention (`g` again for M2m-Self).
    x0: [B, ...] float seeds x_j.
    seed_labels: [B] int, y_j (the class whose f-logit is pushed down).
    target_labels: [B] int, y_i (the class g should predict for x*).
    lam: weight of f's seed-class logit (lambda; 0 gives the lam = 0 ablation).
    step_size: eta, the L2 length of each step.
    steps: T, the number of steps (a Python int).
    clip_min, clip_max: the valid input domain; None for both leaves x unclipped.
    start_noise: the largest L2 norm of the random start (0 disables it).
    seed: a stateless seed ([2] int tensor), required when start_noise > 0.
    start_noise_mode: "official" (the official law over the rows of x0) or "per_sample".
  Returns:
    x*: [B, ...] float32.
  Raises:
    ValueError: steps < 0, start_noise > 0 without a seed, an unknown mode, or one clip bound.
  """
  x0 = tf.convert_to_tensor(x0, tf.float32)
  seed_labels = tf.cast(seed_labels, tf.int32)
  target_labels = tf.cast(target_labels, tf.int32)
  steps = int(steps)
  if steps < 0:
    raise ValueError(f"steps must be >= 0, got {steps}.")
  clip = _clipper(clip_min, clip_max)
  x = x0
  if start_noise and start_noise > 0:
    if seed is None:
      raise ValueError("translate(start_noise > 0) needs a stateless `seed`.")
    x = clip(start_point(x0, start_noise, tf.cast(seed, tf.int64), start_noise_mode))
  eta = tf.cast(step_size, tf.float32)

  def body(t, x):
    # Only x is watched: f's and g's weights are not recorded (no weight gradients).
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(x)
      loss = translation_loss(g, f, x, seed_labels, target_labels, lam)
    d = tape.gradient(loss, x)
    d = d / tf.maximum(_per_sample_l2(d), 1e-12)
    return t + 1, clip(x - eta * d)

  if steps == 0:
    return x
  _, x = tf.while_loop(lambda t, _: t < steps, body, (tf.constant(0), x),
                       maximum_iterations=steps)
  return x


def translation_loss(g, f, x, seed_labels, target_labels, lam) -> tf.Tensor:
  """sum_i CE(g(x_i), y_i) + lam * f(x_i)[y_j], a float32 scalar (f and g in inference mode);
  each row's input gradient is its own objective's."""
  g_logits = tf.cast(g(x, training=False), tf.float32)
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target_labels, logits=g_logits)
  f_logits = tf.cast(f(x, training=False), tf.float32)
  f_seed = tf.gather(f_logits, seed_labels, axis=1, batch_dims=1)
  return tf.reduce_sum(ce + tf.cast(lam, tf.float32) * f_seed)


def _clipper(clip_min, clip_max):
  """x -> x clipped to the valid input domain (identity when both bounds are None)."""
  if (clip_min is None) != (clip_max is None):
    raise ValueError("clip_min and clip_max must both be set or both be None.")
  if clip_min is None:
    return lambda x: x
  return lambda x: tf.clip_by_value(x, clip_min, clip_max)
