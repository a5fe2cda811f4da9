"""Phase-2 batch rewriting of M2m: slots, seeds, rejection, translation, acceptance.

docs/method.md#phase-2-generation, for a class-balanced batch (x, y):

  1. slot i generates with probability 1 - N_{y_i} / N_max;
  2. a seed j is drawn from the seed set (the batch, or a fixed pool) with
     weight w_ij = 1 - beta^{max(N_{y_j} - N_{y_i}, 0)}; no seed if all are 0;
  3. the Bernoulli(w_ij) rejection is drawn BEFORE translating (it does not
     depend on x*), so only slots that can still be accepted are translated;
  4. x* = translate(x_j); accept iff softmax(g(x*))[y_i] >= gamma and the
     Bernoulli draw succeeded; an accepted slot becomes (x*, y_i), the others
     keep their original (real) sample.

Static shapes for XLA: candidate slots are moved to the front with a stable
argsort and translated in one of a few fixed-size buckets chosen by
`tf.switch_case` (sizes ceil(B*k/n_buckets)); padded rows are translated too and
masked out. With no candidate, nothing is translated. Without XLA
(`static_shapes=False`, what `M2mTrainer` passes when it is not jit-compiled)
exactly the candidate rows are translated (a run-time size, no padding), and
the translation loop is traced once. The random start is drawn for the whole
batch and gathered, so every row's x* is the same whatever the bucket layout:
both paths give the same batch.

The official code (alinlab/M2m `train.py`) translates every generation slot and
rejects afterwards, and assumes class 0 is the largest; we use the counts.
"""

import dataclasses
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from m2m_tf.m2m.translate import random_start, translate
from m2m_tf.models import folding

ACCEPT_MODES = ("translate", "clean", "random_label")


@dataclasses.dataclass(frozen=True)
class M2mConfig:
  """Hyper-parameters and ablation switches of M2m's phase 2.

  Attributes:
    beta: seed-rejection base in w_ij = 1 - beta^{max(N_yj - N_yi, 0)}.
    lam: weight of f's seed-class logit in the translation objective.
    gamma: acceptance threshold on g's probability of the target class
      (the official code compares the probability; the paper's text says loss).
    steps: T, translation steps.
    step_size: eta (0.1 for images, 1.0 for Reuters).
    start_noise: L2 radius of the random start (official: 0.5).
    clip_range: valid input domain (min, max), or None for no clipping.
    reject: False gives the M2m-No-Reject ablation (no Bernoulli draw).
    accept_mode: "translate" (x*, y_i); "clean" (M2m-Clean: the clean seed x_j
      labelled y_i); "random_label" (M2m-RS-Rand: x* labelled with a random class
      other than y_i and y_j).
    n_buckets: number of compiled translation sizes (1 = whole batch, naive).
    fold_batchnorm: run the translation's inference passes through g and f
      with BatchNorm folded into the convolutions (`m2m_tf.models.folding`;
      same function up to float32 rounding, ~1.4x faster on CPU ResNets).
  """

  beta: float = 0.999
  lam: float = 0.5
  gamma: float = 0.9
  steps: int = 10
  step_size: float = 0.1
  start_noise: float = 0.5
  clip_range: Optional[Tuple[float, float]] = (0.0, 1.0)
  reject: bool = True
  accept_mode: str = "translate"
  n_buckets: int = 8
  fold_batchnorm: bool = True

  def __post_init__(self):
    if not 0.0 <= self.beta < 1.0:
      raise ValueError(f"beta must be in [0, 1), got {self.beta}.")
    if self.lam < 0:
      raise ValueError(f"lam must be >= 0, got {self.lam}.")
    if not 0.0 <= self.gamma <= 1.0:
      raise ValueError(f"gamma must be in [0, 1], got {self.gamma}.")
    if self.steps < 0 or self.step_size < 0 or self.start_noise < 0:
      raise ValueError("steps, step_size and start_noise must be >= 0.")
    if self.accept_mode not in ACCEPT_MODES:
      raise ValueError(f"accept_mode must be one of {ACCEPT_MODES}, got {self.accept_mode!r}.")
    if self.n_buckets < 1:
      raise ValueError(f"n_buckets must be >= 1, got {self.n_buckets}.")


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
  """One draw per row of categorical(softmax(logits)) by the Gumbel-max trick, int32 [rows].

  Used instead of tf.random.stateless_categorical, which has no XLA CPU kernel.
  """
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

  In a class-balanced batch every class has about the same number of members,
  so the seed's class is drawn with probability proportional to w as well.
  Returns (j, w_ij of the chosen seed, whether row i has any seed).
  """
  w = seed_weights(tf.gather(counts, y), tf.gather(counts, seed_y), beta)  # [B, S]
  return _draw_weighted(w, seed)


def choose_pool_seeds(y, counts, pool_y, beta: float, seed):
  """Step 2 with a fixed seed pool: class k0 with probability proportional to w_{i,k0},
  then a uniform member of k0's pool.

  Drawing a pool member directly by w would choose class k0 with probability
  proportional to |pool_k0| * w, over-weighting the large classes whose pools
  are full (P of them, against N_k for the small ones); the class mix must stay
  that of step 2. Returns (j into the pool, w_{i,k0}, whether row i has a seed).
  """
  num_classes = counts.shape[0]
  pool_count = tf.math.bincount(pool_y, minlength=num_classes, maxlength=num_classes,
                                dtype=tf.int32)
  w = seed_weights(tf.gather(counts, y), counts, beta)  # [B, K]
  w = w * tf.cast(pool_count > 0, tf.float32)[None, :]
  k0, w_sel, has = _draw_weighted(w, seed)
  member_seed = tf.random.experimental.stateless_split(seed, 1)[0]
  u = tf.random.stateless_uniform(tf.shape(k0), seed=member_seed, alg="philox")
  n_k0 = tf.gather(pool_count, k0)
  pos = tf.minimum(tf.cast(tf.floor(u * tf.cast(n_k0, tf.float32)), tf.int32),
                   tf.maximum(n_k0 - 1, 0))
  start = tf.cumsum(pool_count, exclusive=True)
  order = tf.argsort(pool_y, stable=True)
  # A row without any seed (has = False) may draw an empty class; any valid index will do there.
  j = tf.minimum(tf.gather(start, k0) + pos, tf.size(pool_y) - 1)
  return tf.gather(order, j), w_sel, has


def bucket_sizes(batch_size: int, n_buckets: int) -> Tuple[int, ...]:
  """The static translation sizes: 0 and ceil(B*k/n) for k = 1..n (deduplicated)."""
  sizes = sorted({0} | {int(math.ceil(batch_size * k / n_buckets)) for k in range(1, n_buckets + 1)})
  return tuple(sizes)


def generate(g, f, x, y, class_counts, config: M2mConfig, seed,
             seed_x=None, seed_y=None, *,
             static_shapes: bool = True) -> Tuple[tf.Tensor, tf.Tensor, Dict[str, tf.Tensor]]:
  """Rewrites a class-balanced batch with M2m samples (docs/method.md#phase-2-generation).

  Args:
    g: frozen classifier (pass f for M2m-Self), called with training=False.
    f: the classifier being trained, called with training=False.
    x: [B, ...] float32 inputs; y: [B] int labels.
    class_counts: N_k (length K) of the imbalanced training set.
    config: an `M2mConfig`.
    seed: stateless seed, int tensor of shape [2].
    seed_x, seed_y: optional fixed seed pool (the seed-pool ablation); by
      default the seeds are the batch itself.
    static_shapes: True (needed under XLA): one `tf.switch_case` branch per
      bucket size. False (default kernels): exactly the candidates are
      translated (run-time size) and the translation is traced once; same result.
  Returns:
    (x_new, y_new, stats) with stats the scalar float32 counts "gen_slots",
    "candidates" (generation slots with a seed that passed the Bernoulli draw,
    i.e. the slots translated) and "accepted".
  """
  x = tf.convert_to_tensor(x, tf.float32)
  y = tf.cast(y, tf.int32)
  counts = tf.constant(np.asarray(class_counts, np.float32))
  num_classes = len(class_counts)
  p_gen = tf.constant(generation_probability(class_counts).astype(np.float32))
  pooled = seed_x is not None
  if not pooled:
    seed_x, seed_y = x, y
  seed_y = tf.cast(seed_y, tf.int32)
  s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)

  batch = tf.shape(x)[0]
  gen = tf.random.stateless_uniform([batch], seed=s[0], alg="philox") < tf.gather(p_gen, y)
  if pooled:
    j, w_sel, has_seed = choose_pool_seeds(y, counts, seed_y, config.beta, s[1])
  else:
    j, w_sel, has_seed = choose_batch_seeds(y, counts, seed_y, config.beta, s[1])
  passed = tf.random.stateless_uniform([batch], seed=s[2], alg="philox") < w_sel
  if not config.reject:
    passed = tf.ones_like(passed)
  candidate = gen & has_seed & passed
  x_seed = tf.gather(seed_x, j)
  y_seed = tf.gather(seed_y, j)

  clip_min, clip_max = config.clip_range if config.clip_range is not None else (None, None)

  x_start = x_seed
  if config.start_noise > 0:
    # Per row, independent of which rows are translated together (buckets).
    x_start = random_start(x_seed, config.start_noise, s[3])
    if clip_min is not None:
      x_start = tf.clip_by_value(x_start, clip_min, clip_max)

  if config.fold_batchnorm:
    # Folded once per step with the current weights, outside the T-step loop.
    g_fold = folding.inference_fn(g)
    f, g = (g_fold if f is g else folding.inference_fn(f)), g_fold

  def translate_rows(idx):
    """Translates rows idx; returns x* and g's target probability there."""
    xs = translate(g, f, tf.gather(x_start, idx), tf.gather(y_seed, idx), tf.gather(y, idx),
                   lam=config.lam, step_size=config.step_size, steps=config.steps,
                   clip_min=clip_min, clip_max=clip_max)
    probs = tf.nn.softmax(tf.cast(g(xs, training=False), tf.float32))
    p = tf.gather(probs, tf.gather(y, idx), axis=1, batch_dims=1)
    return xs, p

  static_b = x.shape[0]
  nothing = lambda: (tf.zeros_like(x), tf.zeros([batch], tf.float32))  # pylint: disable=unnecessary-lambda-assignment
  if config.n_buckets == 1 or (static_b is None and static_shapes):
    x_star, p_target = translate_rows(tf.range(batch))
  else:
    n_cand = tf.reduce_sum(tf.cast(candidate, tf.int32))
    # Candidates first (stable), so the first `size` rows hold every candidate.
    order = tf.argsort(tf.cast(candidate, tf.int32), direction="DESCENDING", stable=True)

    def translate_first(size):
      """Translates rows order[:size]; scatters x* and g's probability back to [B]."""
      idx = order[:size]
      xs, p = translate_rows(idx)
      return (tf.scatter_nd(idx[:, None], xs, tf.shape(x)),
              tf.scatter_nd(idx[:, None], p, [batch]))

    if static_shapes:  # XLA: one branch per static bucket size.
      sizes = bucket_sizes(static_b, config.n_buckets)
      branch_index = tf.reduce_sum(tf.cast(tf.constant(sizes[:-1]) < n_cand, tf.int32))
      branches = [nothing if n == 0 else (lambda n=n: translate_first(n)) for n in sizes]
      x_star, p_target = tf.switch_case(branch_index, branches)
    else:  # Default kernels: exactly the candidates (run-time size), one traced loop.
      x_star, p_target = tf.cond(n_cand > 0, lambda: translate_first(n_cand), nothing)

  accepted = candidate & (p_target >= config.gamma)
  y_new = y
  if config.accept_mode == "clean":
    x_acc = x_seed
  else:
    x_acc = x_star
  if config.accept_mode == "random_label":
    excluded = tf.one_hot(y, num_classes) + tf.one_hot(y_seed, num_classes)
    rand_logits = tf.where(excluded > 0, -1e9, 0.0)
    y_rand = gumbel_categorical(rand_logits, s[4])
    y_new = tf.where(accepted, y_rand, y)
  mask = tf.reshape(accepted, [-1] + [1] * (len(x.shape) - 1))
  x_new = tf.where(mask, x_acc, x)
  stats = {
      "gen_slots": tf.reduce_sum(tf.cast(gen, tf.float32)),
      "candidates": tf.reduce_sum(tf.cast(candidate, tf.float32)),
      "accepted": tf.reduce_sum(tf.cast(accepted, tf.float32)),
  }
  return x_new, y_new, stats
