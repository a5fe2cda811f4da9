"""The state every timed step configuration of `benchmarks.bench.time_steps` keeps."""

import math
from typing import List, Optional


class TimedSteps:
  """A configuration's step times, timed-sample size and first-call time; subclasses define
  `step(repeat) -> seconds per step`.

  Args:
    cfg: the configuration (its `name` labels errors and tables).
  """

  def __init__(self, cfg):
    self.cfg = cfg
    self.trainer = None  # an M2mTrainer where the step is m2m_tf's
    self.times: List[float] = []
    self.n_steps = 0
    self.repeat = 1
    self.first_call_s: Optional[float] = None
    self.logs: dict = {}

  def step(self, repeat: int = 1) -> float:
    """`repeat` steps; returns seconds per step."""
    raise NotImplementedError

  def warm_up(self, n_warm: int, min_sample_s: float) -> None:
    """`n_warm` untimed steps; the first one's time (trace + compile) is `first_call_s`.

    With more than one warm-up step, `repeat` becomes the number of consecutive
    steps that last about `min_sample_s` (at most 200), timed as one sample.
    """
    last = None
    for i in range(n_warm):
      last = self.step()
      if i == 0:
        self.first_call_s = last
    if n_warm > 1:
      self.repeat = max(1, min(200, int(math.ceil(min_sample_s / max(last, 1e-6)))))
