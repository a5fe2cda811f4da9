"""The official CIFAR ResNet-32 in PyTorch, for the PyTorch reference (launch/torch_reference/,
docs/torch_reference.md), the PyTorch step of `benchmarks.bench --torch`, and as the oracle of
tests/test_torch_import.py.

3 stages of 5 basic blocks (16/32/64 channels), zero-padded identity shortcuts, the official
initialisation, and the input normaliser inside (images in [0, 1] are clamped, then normalised
with the CIFAR-10 channel statistics, as the official `model(normalizer(x))`). Parameter names
follow the official checkpoint, so its state dict loads as it is.
"""

import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

# CIFAR-10 channel statistics of the official code's input normaliser.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


class NormedLinear(nn.Module):
  """LDAM's cosine head: normalised features times column-normalised weights, (in, out)."""

  def __init__(self, cin: int, cout: int):
    super().__init__()
    self.weight = nn.Parameter(torch.empty(cin, cout).uniform_(-1, 1).renorm_(2, 1, 1e-5)
                               .mul_(1e5))

  def forward(self, x):
    return F.normalize(x, dim=1).mm(F.normalize(self.weight, dim=0))


class Block(nn.Module):
  """Basic block; a shortcut that halves the size subsamples and pads channels with zeros."""

  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.conv_a = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn_a = nn.BatchNorm2d(cout)
    self.conv_b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn_b = nn.BatchNorm2d(cout)
    self.stride = stride

  def forward(self, x):
    out = self.bn_b(self.conv_b(F.relu(self.bn_a(self.conv_a(x)))))
    if self.stride != 1:
      x = x[:, :, ::self.stride, ::self.stride]
      x = torch.cat([x, torch.zeros_like(x)], 1)
    return F.relu(x + out)


class ResNet32(nn.Module):
  """f or g: logits of NCHW images in [0, 1].

  Args:
    num_classes: outputs.
    normed_head: LDAM's `NormedLinear` instead of a linear layer.
  """

  def __init__(self, num_classes: int = 10, normed_head: bool = False):
    super().__init__()
    self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
    self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
    self.conv_1_3x3 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    self.bn_1 = nn.BatchNorm2d(16)
    for i, (cin, cout, stride) in enumerate(((16, 16, 1), (16, 32, 2), (32, 64, 2))):
      blocks = [Block(cin, cout, stride)] + [Block(cout, cout, 1) for _ in range(4)]
      setattr(self, f"stage_{i + 1}", nn.Sequential(*blocks))
    self.linear = NormedLinear(64, num_classes) if normed_head else nn.Linear(64, num_classes)

  def features(self, x):
    """The 64 pooled penultimate features."""
    x = (x.clamp(0, 1) - self.mean) / self.std
    x = F.relu(self.bn_1(self.conv_1_3x3(x)))
    x = self.stage_3(self.stage_2(self.stage_1(x)))
    return x.mean((2, 3))

  def forward(self, x):
    return self.linear(self.features(x))


def resnet32(num_classes: int = 10, normed_head: bool = False) -> ResNet32:
  """A `ResNet32` with the official initialisation: convolutions N(0, 2 / (k*k*out)), BN
  weight 1 and bias 0, a linear head He-normal with bias 0 (NormedLinear keeps its own)."""
  model = ResNet32(num_classes, normed_head)
  for m in model.modules():
    if isinstance(m, nn.Conv2d):
      n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
      m.weight.data.normal_(0, math.sqrt(2.0 / n))
    elif isinstance(m, nn.BatchNorm2d):
      m.weight.data.fill_(1)
      m.bias.data.zero_()
    elif isinstance(m, nn.Linear):
      nn.init.kaiming_normal_(m.weight)
      m.bias.data.zero_()
  return model


def load_official(model: nn.Module, path) -> None:
  """Loads a PyTorch-layout `.npz` state dict (the official g) into `model`, strictly."""
  with np.load(path) as npz:
    state = {k: torch.from_numpy(np.array(npz[k])) for k in npz.files}
  model.load_state_dict(state, strict=True)
