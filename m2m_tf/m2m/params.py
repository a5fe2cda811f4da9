"""M2m's parameters: the `M2mConfig` of phase 2's generation (docs/method.md), a section of a
run's configuration (`m2m_tf.config.ExperimentConfig.m2m`)."""

import dataclasses
from typing import Optional, Tuple

from m2m_tf.config_fields import Section, at_least, option

ACCEPT_MODES = ("translate", "clean", "random_label")
START_NOISE_MODES = ("official", "per_sample")


@dataclasses.dataclass(frozen=True)
class M2mConfig(Section):
  """Hyper-parameters and ablation switches of M2m's phase 2 (docs/method.md); each field's
  help says what it is. beta, lam, gamma, step_size and start_noise_mode are None only inside
  an `ExperimentConfig`, where None means the recipe's value; clip_range comes from the data.
  """

  beta: Optional[float] = option(0.999, "M2m seed rejection: w_ij = 1 - beta^max(N_yj - N_yi, "
                                 "0) (recipe: the official 0.999, or the dataset's "
                                 "validation-selected value).",
                                 rule=(lambda v: 0 <= v < 1, "must be in [0, 1)"))
  lam: Optional[float] = option(0.5, "M2m: weight of f's seed-class logit in the translation "
                                "loss (recipe: the official 0.5, or the dataset's selected value).",
                                rule=at_least(0))
  gamma: Optional[float] = option(0.9, "M2m: accept x* iff g's probability of the target >= "
                                  "gamma (recipe: the official 0.9, or the dataset's selected "
                                  "value).", rule=(lambda v: 0 <= v <= 1, "must be in [0, 1]"))
  steps: int = option(10, "M2m: translation steps T.", rule=at_least(0))
  step_size: Optional[float] = option(0.1, "M2m: L2 step size eta (recipe: 1.0 Reuters, "
                                      "else 0.1).", rule=(lambda v: v > 0, "must be > 0"))
  start_noise: float = option(0.5, "M2m: L2 radius of the random start (official 0.5).",
                              rule=at_least(0))
  start_noise_mode: Optional[str] = option(
      "official", "M2m: the random start's law. official: U(-0.5, 0.5) noise, each channel "
      "scaled to L2 norm start_noise over the translated rows; per_sample (ours): radius "
      "start_noise * U(0, 1) per sample (recipe: official for images, per_sample for text).",
      choices=START_NOISE_MODES)
  clip_range: Optional[Tuple[float, float]] = option((0.0, 1.0), "Valid input domain.",
                                                     flag=False, record=False)
  no_reject: bool = option(False, "Ablation M2m-No-Reject: skip the Bernoulli rejection.")
  accept_mode: str = option("translate", "Ablations: translate (M2m), clean (M2m-Clean: accepted "
                            "slots get the clean seed), random_label (RS-Rand's labels).",
                            choices=ACCEPT_MODES)
  n_buckets: int = option(8, "M2m: compiled translation sizes (1 = translate the whole batch, "
                          "the naive static-shape version).", rule=at_least(1))
  fold_batchnorm: bool = option(True, "M2m: run the translation's inference passes through g "
                                "and f with BatchNorm folded into the convolutions (same function "
                                "up to float32 rounding, faster); --nofold_batchnorm calls the "
                                "models as they are.")
