"""Learning-rate schedules of the paper's recipes (docs/method.md#training-recipes)."""

from typing import Callable, Sequence


def warmup_step_lr(base_lr: float, warmup_epochs: int, milestones: Sequence[int],
                   factors: Sequence[float]) -> Callable[[int], float]:
  """Linear warm-up then step decay, evaluated per epoch as in the official code.

  lr(e) = base_lr * (e + 1) / warmup_epochs        for e < warmup_epochs,
  lr(e) = base_lr * prod(factors[m] for milestones[m] <= e)   afterwards.

  Reuters: warmup_step_lr(0.1, 5, [10], [0.1]); CIFAR-LT: (0.1, 5, [160, 180], [0.01, 0.01]).
  """
  milestones = list(milestones)
  factors = list(factors)
  if len(milestones) != len(factors):
    raise ValueError(f"{len(milestones)} milestones but {len(factors)} factors.")
  if base_lr <= 0 or warmup_epochs < 0:
    raise ValueError("base_lr must be > 0 and warmup_epochs >= 0.")
  if milestones != sorted(milestones):
    raise ValueError(f"milestones must be increasing, got {milestones}.")

  def schedule(epoch: int) -> float:
    if epoch < warmup_epochs:
      return base_lr * (epoch + 1) / warmup_epochs
    lr = base_lr
    for m, fac in zip(milestones, factors):
      if epoch >= m:
        lr *= fac
    return lr

  return schedule
