"""Phase-2 batch rewriting of M2m: slots, seeds, rejection, translation, acceptance.

`choose_candidates` (steps 1-3), `random_starts` and `translate_candidates` (step 4) and
`accept` (step 5), composed by `generate`; each random choice has its own stream of
`random_streams(seed)`. See docs/method.md#phase-2-generation and
docs/method.md#how-the-phase-2-step-is-computed.
"""

import functools
import math
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from m2m_tf.m2m.params import M2mConfig
from m2m_tf.m2m.translation import start_point, translate
from m2m_tf.models import folding


def generation_probability(class_counts: Sequence[int]) -> np.ndarray:
  """P(slot of class k generates) = 1 - N_k / N_max (docs/method.md, step 1), float64."""
  n = np.asarray(class_counts, np.float64)
  if n.ndim != 1 or n.size == 0 or np.any(n <= 0):
    raise ValueError(f"class_counts must be positive, got {class_counts}.")
  return 1.0 - n / n.max()


def seed_weights(target_counts: tf.Tensor, seed_counts: tf.Tensor, beta: float) -> tf.Tensor:
  """w_ij = 1 - beta^{max(N_{y_j} - N_{y_i}, 0)}: [len(targets), len(seeds)] float32."""
  diff = tf.maximum(seed_counts[None, :] - target_counts[:, None], 0.0)
  if beta == 0.0:
    return tf.cast(diff > 0, tf.float32)
  return -tf.math.expm1(diff * math.log(beta))


def gumbel_categorical(logits: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """One Gumbel-max draw per row of categorical(softmax(logits)), int32 [rows]
  (docs/platform.md#xla-jit_compile)."""
  u = tf.random.stateless_uniform(tf.shape(logits), seed=seed, minval=1e-20, maxval=1.0,
                                  alg="philox")
  return tf.argmax(logits - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int32)


def _draw_weighted(w: tf.Tensor, seed: tf.Tensor):
  """One column per row with probability proportional to w (rows of zeros: column 0)."""
  has = tf.reduce_sum(w, axis=1) > 0
  logits = tf.where(w > 0, tf.math.log(w + 1e-12), tf.fill(tf.shape(w), -1e9))
  logits = tf.where(has[:, None], logits, tf.zeros_like(logits))
  j = gumbel_categorical(logits, seed)
  return j, tf.gather(w, j, axis=1, batch_dims=1), has


def choose_batch_seeds(y, counts, seed_y, beta: float, seed):
  """Step 2 over the batch: seed j with probability proportional to w_ij.

  Returns (j, w_ij of the chosen seed, whether row i has any seed).
  """
  w = seed_weights(tf.gather(counts, y), tf.gather(counts, seed_y), beta)  # [B, S]
  return _draw_weighted(w, seed)


class SeedPool(NamedTuple):
  """A fixed seed pool (seed-pool ablation) with its class index, built once by `make_seed_pool`.

  Attributes:
    x: [P, ...] float32 pool inputs.
    y: [P] int32 pool labels.
    count: [K] int32 members per class.
    start: [K] int32 position in `order` of each class's first member.
    order: [P] int32 pool indices sorted by class (stable).
  """

  x: tf.Tensor
  y: tf.Tensor
  count: tf.Tensor
  start: tf.Tensor
  order: tf.Tensor


def make_seed_pool(x, y, num_classes: int) -> SeedPool:
  """A `SeedPool` of arrays x [P, ...] and y [P]; its class index is computed once, exactly."""
  y = np.asarray(y).astype(np.int32)
  if y.ndim != 1 or y.size == 0 or y.min() < 0 or y.max() >= num_classes:
    raise ValueError(f"pool labels must be a non-empty [P] array in [0, {num_classes}).")
  count = np.bincount(y, minlength=num_classes).astype(np.int32)
  start = (np.cumsum(count) - count).astype(np.int32)
  order = np.argsort(y, kind="stable").astype(np.int32)
  return SeedPool(*(tf.constant(a) for a in (np.asarray(x, np.float32), y, count, start, order)))


def choose_pool_seeds(y, counts, pool: SeedPool, beta: float, seed):
  """Step 2 with a fixed seed pool: class k0 with probability proportional to w_{i,k0},
  then a uniform member of k0's pool (docs/method.md#ablations).

  Returns (j into the pool, w_{i,k0}, whether row i has a seed).
  """
  w = seed_weights(tf.gather(counts, y), counts, beta)  # [B, K]
  w = w * tf.cast(pool.count > 0, tf.float32)[None, :]
  k0, w_sel, has = _draw_weighted(w, seed)
  member_seed = tf.random.experimental.stateless_split(seed, 1)[0]
  u = tf.random.stateless_uniform(tf.shape(k0), seed=member_seed, alg="philox")
  n_k0 = tf.gather(pool.count, k0)
  pos = tf.minimum(tf.cast(tf.floor(u * tf.cast(n_k0, tf.float32)), tf.int32),
                   tf.maximum(n_k0 - 1, 0))
  # A row without any seed (has = False) may draw an empty class; any valid index will do there.
  j = tf.minimum(tf.gather(pool.start, k0) + pos, tf.size(pool.y) - 1)
  return tf.gather(pool.order, j), w_sel, has


def bucket_sizes(batch_size: int, n_buckets: int) -> Tuple[int, ...]:
  """The static translation sizes: 0 and ceil(B*k/n) for k = 1..n (deduplicated)."""
  sizes = {int(math.ceil(batch_size * k / n_buckets)) for k in range(1, n_buckets + 1)}
  sizes = sorted({0} | sizes)
  return tuple(sizes)


class Candidates(NamedTuple):
  """Steps 1-3 for every slot i of a batch of B (docs/method.md#phase-2-generation).

  Attributes:
    gen: [B] bool, slot i generates (step 1).
    j: [B] int32, index of its seed in the seed set (the batch or the pool).
    w: [B] float32, w_ij of that seed.
    has_seed: [B] bool, some seed has w_ij > 0 (otherwise j is meaningless).
    candidate: [B] bool, gen & has_seed & the Bernoulli(w_ij) draw passed (step 3).
    x_seed: [B, ...] float32, x_j.
    y_seed: [B] int32, y_j.
  """

  gen: tf.Tensor
  j: tf.Tensor
  w: tf.Tensor
  has_seed: tf.Tensor
  candidate: tf.Tensor
  x_seed: tf.Tensor
  y_seed: tf.Tensor


# One stateless stream per random choice of a step, split from the step's seed.
STREAM_SLOTS, STREAM_SEEDS, STREAM_BERNOULLI, STREAM_START, STREAM_LABEL = range(5)


def random_streams(seed) -> tf.Tensor:
  """The step's stateless seeds, [5, 2] int64, indexed by the STREAM_* constants."""
  return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)


def choose_candidates(x, y, class_counts: Sequence[int], config: M2mConfig, streams,
                      pool: Optional[SeedPool] = None) -> Candidates:
  """Steps 1-3: generation slots, a seed per slot and the Bernoulli(w_ij) rejection.

  Args:
    x: [B, ...] float32 batch; y: [B] int32 labels.
    class_counts: N_k of the imbalanced training set.
    config: an `M2mConfig` (beta, no_reject).
    streams: `random_streams(seed)`; STREAM_SLOTS, STREAM_SEEDS and STREAM_BERNOULLI are used.
    pool: a fixed `SeedPool`, or None to draw the seeds from the batch itself.
  """
  counts = tf.constant(np.asarray(class_counts, np.float32))
  p_gen = tf.constant(generation_probability(class_counts).astype(np.float32))
  batch = tf.shape(x)[0]
  gen = (tf.random.stateless_uniform([batch], seed=streams[STREAM_SLOTS], alg="philox")
         < tf.gather(p_gen, y))
  if pool is None:
    seed_x, seed_y = x, y
    j, w, has_seed = choose_batch_seeds(y, counts, y, config.beta, streams[STREAM_SEEDS])
  else:
    seed_x, seed_y = pool.x, pool.y
    j, w, has_seed = choose_pool_seeds(y, counts, pool, config.beta, streams[STREAM_SEEDS])
  passed = tf.random.stateless_uniform([batch], seed=streams[STREAM_BERNOULLI], alg="philox") < w
  if config.no_reject:
    passed = tf.ones_like(passed)
  return Candidates(gen=gen, j=j, w=w, has_seed=has_seed, candidate=gen & has_seed & passed,
                    x_seed=tf.gather(seed_x, j), y_seed=tf.gather(seed_y, j))


def random_starts(x_seed, config: M2mConfig, seed, rows=None) -> tf.Tensor:
  """The translation's starting points for the whole batch: x_j plus the random start, clipped
  (x_j if no noise). `rows` ([B] bool): the rows the official law normalises over
  (docs/method.md#the-random-start).
  """
  if config.start_noise <= 0:
    return x_seed
  x_start = start_point(x_seed, config.start_noise, seed, config.start_noise_mode, rows)
  if config.clip_range is not None:
    x_start = tf.clip_by_value(x_start, *config.clip_range)
  return x_start


def inference_models(g, f, config: M2mConfig):
  """(g, f) for the translation's inference passes, with BatchNorm folded if configured."""
  if not config.fold_batchnorm:
    return g, f
  # Folded once per step with the current weights, outside the T-step loop.
  g_fold = folding.inference_fn(g)
  return g_fold, (g_fold if f is g else folding.inference_fn(f))


def translate_rows(g, f, x_start, y_seed, y, idx, config: M2mConfig):
  """Translates rows idx from x_start; returns (x* [n, ...], g's probability of y_i [n])."""
  clip_min, clip_max = config.clip_range if config.clip_range is not None else (None, None)
  y_idx = tf.gather(y, idx)
  xs = translate(g, f, tf.gather(x_start, idx), tf.gather(y_seed, idx), y_idx,
                 lam=config.lam, step_size=config.step_size, steps=config.steps,
                 clip_min=clip_min, clip_max=clip_max)
  probs = tf.nn.softmax(tf.cast(g(xs, training=False), tf.float32))
  return xs, tf.gather(probs, y_idx, axis=1, batch_dims=1)


def translate_candidates(g, f, x_start, y_seed, y, candidate, config: M2mConfig, *,
                         static_shapes: bool = True):
  """Step 4 for the candidate rows: (x* [B, ...], g's probability of y_i at x* [B]).

  Non-candidate rows hold zeros, or are translated as well on the single-bucket path
  (n_buckets = 1, or an unknown static batch size with static_shapes).
  """
  translate_fn = functools.partial(translate_rows, g, f, x_start, y_seed, y, config=config)
  batch, static_b = tf.shape(x_start)[0], x_start.shape[0]
  if config.n_buckets == 1 or (static_b is None and static_shapes):
    return translate_fn(tf.range(batch))
  n_cand = tf.reduce_sum(tf.cast(candidate, tf.int32))
  # Candidates first (stable), so the first `size` rows hold every candidate.
  order = tf.argsort(tf.cast(candidate, tf.int32), direction="DESCENDING", stable=True)

  def translate_first(size):
    """Translates rows order[:size]; scatters x* and g's probability back to [B]."""
    idx = order[:size]
    xs, p = translate_fn(idx)
    return (tf.scatter_nd(idx[:, None], xs, tf.shape(x_start)),
            tf.scatter_nd(idx[:, None], p, [batch]))

  def nothing():
    return tf.zeros_like(x_start), tf.zeros([batch], tf.float32)

  if not static_shapes:  # Default kernels: exactly the candidates (run-time size), one traced loop.
    return tf.cond(n_cand > 0, lambda: translate_first(n_cand), nothing)
  # XLA: one branch per static bucket size, the smallest that holds every candidate.
  sizes = bucket_sizes(static_b, config.n_buckets)
  branch_index = tf.reduce_sum(tf.cast(tf.constant(sizes[:-1]) < n_cand, tf.int32))
  branches = [nothing if n == 0 else (lambda n=n: translate_first(n)) for n in sizes]
  return tf.switch_case(branch_index, branches)


def accept(x, y, candidates: Candidates, x_star, p_target, config: M2mConfig, seed,
           num_classes: int):
  """Step 5: accept iff candidate and p_target >= gamma; returns (x_new, y_new, accepted).

  Accepted slots become (x*, y_i), or by `config.accept_mode` (x_j, y_i)
  ("clean") or (x*, a uniform class other than y_i and y_j) ("random_label",
  drawn with `seed`); the other slots keep (x, y).
  """
  accepted = candidates.candidate & (p_target >= config.gamma)
  x_acc = candidates.x_seed if config.accept_mode == "clean" else x_star
  y_new = y
  if config.accept_mode == "random_label":
    excluded = tf.one_hot(y, num_classes) + tf.one_hot(candidates.y_seed, num_classes)
    y_rand = gumbel_categorical(tf.where(excluded > 0, -1e9, 0.0), seed)
    y_new = tf.where(accepted, y_rand, y)
  mask = tf.reshape(accepted, [-1] + [1] * (len(x.shape) - 1))
  return tf.where(mask, x_acc, x), y_new, accepted


def generate(g, f, x, y, class_counts, config: M2mConfig, seed, pool: Optional[SeedPool] = None,
             *, static_shapes: bool = True) -> Tuple[tf.Tensor, tf.Tensor, Dict[str, tf.Tensor]]:
  """Rewrites a class-balanced batch with M2m samples (docs/method.md#phase-2-generation).

  Args:
    g: frozen classifier (pass f for M2m-Self), called with training=False.
    f: the classifier being trained, called with training=False.
    x: [B, ...] float32 inputs; y: [B] int labels.
    class_counts: N_k (length K) of the imbalanced training set.
    config: an `M2mConfig`.
    seed: stateless seed, int tensor of shape [2].
    pool: optional fixed `SeedPool` (the seed-pool ablation); by default the
      seeds are the batch itself.
    static_shapes: True (needed under XLA) translates in fixed-size buckets; False exactly
      the candidates. Same result.
  Returns:
    (x_new, y_new, stats), stats the scalar float32 counts "gen_slots", "candidates" (the
    slots translated) and "accepted".
  """
  x = tf.convert_to_tensor(x, tf.float32)
  y = tf.cast(y, tf.int32)
  streams = random_streams(seed)
  cand = choose_candidates(x, y, class_counts, config, streams, pool)
  # The official code translates every generation slot with a seed (it rejects afterwards):
  # those rows share the official start's per-channel norm.
  x_start = random_starts(cand.x_seed, config, streams[STREAM_START], cand.gen & cand.has_seed)
  g_inf, f_inf = inference_models(g, f, config)
  x_star, p_target = translate_candidates(g_inf, f_inf, x_start, cand.y_seed, y, cand.candidate,
                                          config, static_shapes=static_shapes)
  x_new, y_new, accepted = accept(x, y, cand, x_star, p_target, config, streams[STREAM_LABEL],
                                  len(class_counts))
  stats = {name: tf.reduce_sum(tf.cast(mask, tf.float32))
           for name, mask in (("gen_slots", cand.gen), ("candidates", cand.candidate),
                              ("accepted", accepted))}
  return x_new, y_new, stats
