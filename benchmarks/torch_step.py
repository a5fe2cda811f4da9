"""The project's PyTorch ResNet-32 SGD step, timed beside m2m_tf's (`benchmarks.bench --torch`).

The same workload as m2m_tf's ERM step: the official ResNet-32
(`launch/torch_reference/resnet.py`), SGD with momentum 0.9 and coupled weight decay, lr 0.1,
cross-entropy, on the same in-memory class-balanced batches (NHWC arrays transposed once to
PyTorch's NCHW). It shares the round-robin
of `launch.step_timing.time_steps`, so a change of load hits both alike.
"""

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from launch.step_timing import TimedSteps
from launch.torch_reference import resnet

TORCH_METHOD = "torch_erm"


class TorchTimed(TimedSteps):
  """A PyTorch ResNet-32, its optimizer, the batches, and its step times.

  Args:
    w: the `launch.step_timing.Workload` (ResNet-32 only).
    cfg: its `StepConfig` (method `TORCH_METHOD`).
    xs, ys: [n_batches, B, H, W, C] float32 images and [n_batches, B] labels.
    seed: torch's seed for the initialisation.
  """

  def __init__(self, w, cfg, xs, ys, seed: int):
    if w.arch != "resnet32":
      raise ValueError(f"the PyTorch step exists for ResNet-32 only, not {w.arch}")
    torch.manual_seed(seed)
    super().__init__(cfg)
    self.model = resnet.resnet32(len(w.class_counts)).train()
    self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9,
                                     weight_decay=w.weight_decay)
    self.batches = [(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
                     torch.from_numpy(np.asarray(y, np.int64))) for x, y in zip(xs, ys)]
    self.i = 0

  def step(self, repeat: int = 1) -> float:
    """`repeat` SGD steps; returns seconds per step (PyTorch on the CPU runs synchronously)."""
    t0 = time.perf_counter()
    for _ in range(repeat):
      x, y = self.batches[self.i % len(self.batches)]
      self.i += 1
      loss = F.cross_entropy(self.model(x), y)
      self.optimizer.zero_grad(set_to_none=True)
      loss.backward()
      self.optimizer.step()
    dt = (time.perf_counter() - t0) / repeat
    if not math.isfinite(loss.item()):
      raise FloatingPointError(f"{self.cfg.name}: non-finite loss {loss.item()}.")
    return dt
