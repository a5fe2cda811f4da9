"""The method registry: a re-balancing name maps to its pieces (sampling, weights, oversampling,
M2m).

Losses ("ce", "focal", "ldam", "logit_adjusted", "balanced_softmax") are chosen separately
(`m2m_tf.losses`), so LDAM-DRW is loss="ldam" + rebalancing="drw", LDAM-M2m is loss="ldam" +
rebalancing="m2m" and LA-M2m is loss="logit_adjusted" + rebalancing="m2m"
(docs/method.md#baselines-and-losses). Adding a method is one entry here.
"""

import dataclasses
from typing import Dict, Optional


@dataclasses.dataclass(frozen=True)
class Method:
  """How one re-balancing method trains.

  Attributes:
    name: registry key.
    balanced_from: "never", "start" (RS) or "deferred" (DRS, M2m phase 2):
      from when batches are class-balanced.
    class_weight: per-class loss weights from epoch 0: "none", "rw" or "cb".
    deferred_class_weight: weights from the deferred epoch on (DRW: "cb").
    oversample: "smote" to oversample the training set before training.
    m2m: M2m translation in phase 2 (needs a frozen g).
  """

  name: str
  balanced_from: str = "never"
  class_weight: str = "none"
  deferred_class_weight: Optional[str] = None
  oversample: Optional[str] = None
  m2m: bool = False

  @property
  def needs_g(self) -> bool:
    """Whether a pre-trained ERM classifier g is required."""
    return self.m2m

  @property
  def deferred(self) -> bool:
    """Whether something switches on at the deferred epoch (DRS, DRW, M2m)."""
    return self.balanced_from == "deferred" or self.deferred_class_weight is not None or self.m2m

  @property
  def phase1(self) -> tuple:
    """What shapes training before the deferred epoch: runs with equal `phase1` share it."""
    return (self.balanced_from == "start", self.class_weight, self.oversample)


METHODS: Dict[str, Method] = {
    m.name: m for m in (
        Method("erm"),
        Method("rs", balanced_from="start"),
        Method("smote", oversample="smote"),
        Method("rw", class_weight="rw"),
        Method("cb_rw", class_weight="cb"),
        Method("drs", balanced_from="deferred"),
        Method("drw", deferred_class_weight="cb"),
        Method("m2m", balanced_from="deferred", m2m=True),
    )
}


def get_method(name: str) -> Method:
  """Looks up a re-balancing method; a clear error lists the valid names."""
  try:
    return METHODS[name]
  except KeyError:
    raise ValueError(f"Unknown method {name!r}; valid: {sorted(METHODS)}.") from None
