"""load_torch_state_dict against a PyTorch copy of the official ResNet-32.

Needs PyTorch (CPU): `.venv/bin/pip install torch==2.13.0`. Without it the
whole module is skipped.
"""

import copy
import math
import os
import tempfile

import pytest

torch = pytest.importorskip(
    "torch",
    reason="PyTorch is not installed (pip install torch==2.13.0); the "
    "PyTorch-vs-Keras ResNet-32 comparison needs it")

from absl.testing import parameterized  # after the skip: PyTorch is optional
import numpy as np
import tensorflow as tf

from launch.torch_reference import resnet as torch_resnet
from m2m_tf import models
from helpers import OFFICIAL_NPZ



# The PyTorch copy of the official architecture is launch/torch_reference/resnet.py's (normaliser
# inside, as the official code's `model(normalizer(x))`).


def TorchResNet32(num_classes=10, normalized=False):
  return torch_resnet.resnet32(num_classes, normed_head=normalized)


# --- Helpers. ---


def _randomize(net, seed):
  """Random weights and random BN running statistics (logits of O(1))."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, t in net.state_dict().items():
      if name.endswith("num_batches_tracked"):
        t.fill_(7)
      elif name.endswith("running_var"):
        t.copy_(0.5 + torch.rand(t.shape, generator=g))
      elif name.endswith("running_mean"):
        t.copy_(0.2 * torch.randn(t.shape, generator=g))
      elif t.dim() == 1:  # BN gamma / beta, linear bias.
        t.copy_(0.2 + 0.4 * torch.rand(t.shape, generator=g) if name.endswith(
            ".weight") else 0.1 * torch.randn(t.shape, generator=g))
      else:
        fan_in = t[0].numel() if t.dim() > 1 else 1
        t.copy_(torch.randn(t.shape, generator=g) * math.sqrt(2.0 / fan_in))
  return net.eval()


def _torch_logits(net, images_nhwc):
  """PyTorch's logits in float64: the reference, so that only TF's float32 error is compared."""
  net64 = copy.deepcopy(net).double().eval()
  x = torch.from_numpy(images_nhwc.astype(np.float64)).permute(0, 3, 1, 2)
  with torch.no_grad():
    return net64(x).numpy()


def _save_npz(state, path):
  np.savez(path, **{k: v.detach().cpu().numpy() for k, v in state.items()})


def _images(n, seed):
  return np.random.default_rng(seed).random((n, 32, 32, 3), np.float32)


class LoadTorchStateDictTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp()

  @parameterized.named_parameters(("linear", False), ("normed", True))
  def test_random_weights_logits_match(self, normed):
    torch.manual_seed(0)
    net = _randomize(TorchResNet32(10, normalized=normed), seed=1)
    path = os.path.join(self.tmp, "random.npz")
    _save_npz(net.state_dict(), path)  # Includes num_batches_tracked.
    model = models.load_torch_state_dict(
        models.resnet32(10, normed_head=normed), path)
    x = _images(6, seed=2)
    ref = _torch_logits(net, x)
    got = model(x, training=False).numpy()
    diff = np.max(np.abs(got - ref))
    print(f"random weights (normed_head={normed}): max |logit diff| = "
          f"{diff:.3g}, max |logit| = {np.max(np.abs(ref)):.3g}")
    # TF float32 against PyTorch float64 (u32 = 2^-24 = 6e-8): 31 convs of
    # fan-in n <= 576, each within ~sqrt(n) u32 = 1.4e-6 of its output scale,
    # random-walk-compounded to ~sqrt(31) * 1.4e-6 = 8e-6 of max |logit|.
    # 1e-4 of max |logit| leaves 12x; measured 3.1e-7 (linear head) and
    # 2.9e-7 (cosine head). Keras' default BN epsilon (1e-3, not 1e-5) would
    # give 1.6e-3 and 3.8e-4; a transposed or misplaced weight, O(1).
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * np.max(np.abs(ref)))

  def test_official_checkpoint_logits_match(self):
    with np.load(OFFICIAL_NPZ) as d:
      state = {k: torch.from_numpy(d[k].copy()) for k in d.files}
    net = TorchResNet32(10)
    result = net.load_state_dict(state, strict=False)
    self.assertEqual(list(result.unexpected_keys), [])
    self.assertTrue(all(k.endswith("num_batches_tracked")
                        for k in result.missing_keys))
    model = models.load_torch_state_dict(models.resnet32(10), OFFICIAL_NPZ)
    x = _images(8, seed=3)
    ref = _torch_logits(net, x)
    got = model(x, training=False).numpy()
    diff = np.max(np.abs(got - ref))
    print(f"official checkpoint: max |logit diff| = {diff:.3g}, "
          f"max |logit| = {np.max(np.abs(ref)):.3g}")
    # As in test_random_weights_logits_match; measured 5.2e-7 of max |logit|.
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * np.max(np.abs(ref)))
    self.assertAllEqual(np.argmax(got, 1), np.argmax(ref, 1))

  def test_missing_file(self):
    path = os.path.join(self.tmp, "nope.npz")
    with self.assertRaisesRegex(FileNotFoundError, "nope.npz"):
      models.load_torch_state_dict(models.resnet32(10), path)

  def test_missing_key(self):
    with np.load(OFFICIAL_NPZ) as d:
      state = {k: d[k] for k in d.files if k != "stage_2.3.bn_b.running_var"}
    path = os.path.join(self.tmp, "missing.npz")
    np.savez(path, **state)
    with self.assertRaisesRegex(ValueError,
                                r"missing keys.*stage_2\.3\.bn_b\.running_var"):
      models.load_torch_state_dict(models.resnet32(10), path)

  def test_unexpected_key(self):
    with np.load(OFFICIAL_NPZ) as d:
      state = {k: d[k] for k in d.files}
    state["fc.weight"] = np.zeros((10, 64), np.float32)
    path = os.path.join(self.tmp, "extra.npz")
    np.savez(path, **state)
    with self.assertRaisesRegex(ValueError, r"unexpected keys.*fc\.weight"):
      models.load_torch_state_dict(models.resnet32(10), path)

  def test_wrong_shape_names_key_and_shapes_and_writes_nothing(self):
    model = models.resnet32(100)  # The checkpoint has 10 classes.
    before = [w.numpy().copy() for w in model.weights]
    with self.assertRaisesRegex(
        ValueError,
        r"'linear\.weight': checkpoint has \(10, 64\), model expects "
        r"\(100, 64\)"):
      models.load_torch_state_dict(model, OFFICIAL_NPZ)
    for b, w in zip(before, model.weights):
      np.testing.assert_array_equal(b, w.numpy())

  def test_data_parallel_prefix_stripped(self):
    with np.load(OFFICIAL_NPZ) as d:
      state = {"module." + k: d[k] for k in d.files}
    path = os.path.join(self.tmp, "dp.npz")
    np.savez(path, **state)
    a = models.load_torch_state_dict(models.resnet32(10), path)
    b = models.load_torch_state_dict(models.resnet32(10), OFFICIAL_NPZ)
    x = _images(2, seed=4)
    np.testing.assert_array_equal(a(x, training=False).numpy(),
                                  b(x, training=False).numpy())


if __name__ == "__main__":
  tf.test.main()
