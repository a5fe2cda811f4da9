"""ResNets: the official M2m ResNet-32 (and its CifarResNet family), pre-activation ResNet-18,
ResNet-50. They take NHWC images in [0, 1], standardise them as their first layer and return
logits; layers are named after the PyTorch reference's modules (docs/method.md#the-networks).
"""

import keras
from keras import ops

from m2m_tf.models import batch_norm
from m2m_tf.models import conv_bn
from m2m_tf.models import heads
from m2m_tf.models.standardize import Standardize

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_BN_EPSILON = 1e-5
_BN_MOMENTUM = 0.9  # Keras convention; equals PyTorch momentum 0.1.


@keras.saving.register_keras_serializable(package="m2m_tf")
class DownsampleA(keras.layers.Layer):
  """Option-A shortcut of the official code: x[:, ::2, ::2, :] with as many zero channels added."""

  def call(self, inputs):
    x = inputs[:, ::2, ::2, :]
    return ops.concatenate([x, ops.zeros_like(x)], axis=-1)

  def compute_output_shape(self, input_shape):
    b, h, w, c = input_shape
    h = None if h is None else (h + 1) // 2
    w = None if w is None else (w + 1) // 2
    c = None if c is None else 2 * c
    return (b, h, w, c)


def _batch_norm(name, layer_class=batch_norm.BatchNormalization):
  # Synchronized across replicas when built under a strategy with several (batch_norm).
  return layer_class(axis=-1, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name)


def _conv_layer(x, filters, kernel_size, stride, padding, name, initializer,
                layer_class=keras.layers.Conv2D):
  """(x, a Conv2D without bias) with PyTorch-style symmetric zero padding `padding`.

  'same' where it equals that padding, else x comes back zero-padded for a 'valid' conv.
  """
  conv_padding = "valid"
  if padding and stride == 1 and kernel_size % 2 == 1 and 2 * padding == kernel_size - 1:
    conv_padding = "same"
  elif padding:
    x = keras.layers.ZeroPadding2D(padding, name=name + "_pad")(x)
  conv = layer_class(
      filters, kernel_size, strides=stride, padding=conv_padding, use_bias=False,
      kernel_initializer=initializer, name=name)
  return x, conv


def _conv(x, filters, kernel_size, stride, padding, name, initializer):
  """A Conv2D whose output is not (only) read by a BatchNorm; see `_conv_layer`."""
  x, conv = _conv_layer(x, filters, kernel_size, stride, padding, name, initializer)
  return conv(x)


def _conv_bn(x, filters, kernel_size, stride, padding, name, bn_name, initializer):
  """BatchNorm(conv(x)) as a foldable `conv_bn` pair; conv as in `_conv_layer`."""
  x, conv = _conv_layer(x, filters, kernel_size, stride, padding, name, initializer,
                        layer_class=conv_bn.Conv2D)
  return conv_bn.conv_bn(x, conv, _batch_norm(bn_name, conv_bn.BatchNormalization))


def _check_image_args(fn, num_classes, input_shape, mean, std):
  num_classes = int(num_classes)
  if num_classes <= 0:
    raise ValueError(f"{fn}: num_classes must be positive, got {num_classes}")
  input_shape = tuple(input_shape)
  if len(input_shape) != 3:
    raise ValueError(
        f"{fn}: input_shape must be (height, width, channels), got "
        f"{input_shape}")
  if input_shape[-1] != len(mean) or len(mean) != len(std):
    raise ValueError(
        f"{fn}: input_shape {input_shape} has {input_shape[-1]} channels but "
        f"mean has {len(mean)} and std {len(std)} entries")
  return num_classes, input_shape


# ---------------------------------------------------------------------------
# ResNet-32 (official M2m / LDAM-DRW CifarResNet)
# ---------------------------------------------------------------------------


def _official_conv_init():
  # Official: m.weight.normal_(0, sqrt(2 / n)), n = kh * kw * out_channels.
  return keras.initializers.VarianceScaling(
      scale=2.0, mode="fan_out", distribution="untruncated_normal")


def _resnet32_basic_block(x, planes, stride, downsample, name):
  """Official ResNetBasicblock: relu(bn_b(conv_b(relu(bn_a(conv_a(x))))) + shortcut(x))."""
  init = _official_conv_init()
  out = _conv_bn(x, planes, 3, stride, 1, name + ".conv_a", name + ".bn_a", init)
  out = keras.layers.ReLU(name=name + ".relu_a")(out)
  out = _conv_bn(out, planes, 3, 1, 1, name + ".conv_b", name + ".bn_b", init)
  residual = DownsampleA(name=name + ".downsample")(x) if downsample else x
  out = keras.layers.Add(name=name + ".add")([residual, out])
  return keras.layers.ReLU(name=name + ".relu")(out)


def resnet32(num_classes, *, input_shape=(32, 32, 3), normed_head=False,
             mean=CIFAR10_MEAN, std=CIFAR10_STD, name="resnet32"):
  """The official M2m ResNet-32 (alinlab/M2m `models/resnet32.py`): 0.46 M parameters for K = 10.

  Args:
    input_shape: (height, width, channels) of the [0, 1] input images.
    normed_head: cosine classifier (official `resnet32_norm`) instead of nn.Linear.
    mean, std: per-channel standardisation inside the model (default: CIFAR-10's).
  Returns:
    A functional `keras.Model` from (batch, H, W, C) images to logits.
  """
  return cifar_resnet(num_classes, depth=32, input_shape=input_shape, normed_head=normed_head,
                      mean=mean, std=std, name=name)


def cifar_resnet(num_classes, *, depth, input_shape=(32, 32, 3), normed_head=False,
                 mean=CIFAR10_MEAN, std=CIFAR10_STD, name=None):
  """ResNet-`depth` of the official CifarResNet family (depth = 6 n + 2; `resnet32` is 32).

  Layers, names and initialisation as `resnet32`'s. Raises ValueError for another depth or
  an argument `resnet32` refuses.
  """
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(f"cifar_resnet: depth must be 6 n + 2 with n >= 1, got {depth}")
  num_classes, input_shape = _check_image_args(
      f"resnet{depth}", num_classes, input_shape, mean, std)
  inputs = keras.Input(shape=input_shape, name="images")
  x = Standardize(mean, std, name="normalize")(inputs)
  x = _conv_bn(x, 16, 3, 1, 1, "conv_1_3x3", "bn_1", _official_conv_init())
  x = keras.layers.ReLU(name="relu_1")(x)
  inplanes = 16
  for stage, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), 1):
    for block in range((depth - 2) // 6):
      s = stride if block == 0 else 1
      x = _resnet32_basic_block(
          x, planes, s, downsample=(s != 1 or inplanes != planes),
          name=f"stage_{stage}.{block}")
      inplanes = planes
  x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
  logits = heads.classifier_head(
      num_classes, normed_head=normed_head,
      kernel_initializer=keras.initializers.VarianceScaling(
          scale=2.0, mode="fan_in", distribution="untruncated_normal"),
      bias_initializer="zeros", name="linear")(x)
  return keras.Model(inputs, logits, name=name or f"resnet{depth}")


# ---------------------------------------------------------------------------
# Pre-activation ResNet-18 (common CIFAR code, e.g. kuangliu/pytorch-cifar)
# ---------------------------------------------------------------------------


def _preact_block(x, in_planes, planes, stride, name):
  """PreActBlock: conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut.

  The shortcut is identity, or a 1x1 strided conv of relu(bn1(x)) when the shape changes.
  """
  init = heads.torch_kernel_initializer()
  out = _batch_norm(name + ".bn1")(x)
  out = keras.layers.ReLU(name=name + ".relu1")(out)
  if stride != 1 or in_planes != planes:
    shortcut = _conv(out, planes, 1, stride, 0, name + ".shortcut.0", init)
  else:
    shortcut = x
  out = _conv_bn(out, planes, 3, stride, 1, name + ".conv1", name + ".bn2", init)
  out = keras.layers.ReLU(name=name + ".relu2")(out)
  out = _conv(out, planes, 3, 1, 1, name + ".conv2", init)
  return keras.layers.Add(name=name + ".add")([out, shortcut])


def preact_resnet18(num_classes, *, input_shape=(32, 32, 3),
                    normed_head=False, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    final_bn_relu=False, name="preact_resnet18"):
  """Pre-activation ResNet-18 for 32 px inputs (kuangliu/pytorch-cifar `PreActResNet18`).

  Args:
    normed_head: cosine `NormedDense` classifier instead of Dense.
    mean, std: per-channel standardisation inside the model (default: ImageNet's).
    final_bn_relu: add BN + ReLU before pooling.
  Returns:
    A functional `keras.Model` from (batch, H, W, C) images to logits.
  """
  num_classes, input_shape = _check_image_args(
      "preact_resnet18", num_classes, input_shape, mean, std)
  inputs = keras.Input(shape=input_shape, name="images")
  x = Standardize(mean, std, name="normalize")(inputs)
  x = _conv(x, 64, 3, 1, 1, "conv1", heads.torch_kernel_initializer())
  in_planes = 64
  for stage, (planes, stride) in enumerate(
      ((64, 1), (128, 2), (256, 2), (512, 2)), 1):
    for block in range(2):
      x = _preact_block(x, in_planes, planes, stride if block == 0 else 1,
                        name=f"layer{stage}.{block}")
      in_planes = planes
  if final_bn_relu:
    x = _batch_norm("bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
  x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
  logits = heads.classifier_head(
      num_classes, normed_head=normed_head,
      kernel_initializer=heads.torch_kernel_initializer(),
      bias_initializer=heads.torch_bias_initializer(512), name="linear")(x)
  return keras.Model(inputs, logits, name=name)


# ---------------------------------------------------------------------------
# ResNet-50 (torchvision)
# ---------------------------------------------------------------------------


def _torchvision_conv_init():
  # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
  return keras.initializers.VarianceScaling(
      scale=2.0, mode="fan_out", distribution="untruncated_normal")


def _bottleneck(x, in_planes, planes, stride, name):
  """torchvision Bottleneck (v1.5: the stride sits on the 3x3 conv)."""
  init = _torchvision_conv_init()
  out_planes = planes * 4
  out = _conv_bn(x, planes, 1, 1, 0, name + ".conv1", name + ".bn1", init)
  out = keras.layers.ReLU(name=name + ".relu1")(out)
  out = _conv_bn(out, planes, 3, stride, 1, name + ".conv2", name + ".bn2", init)
  out = keras.layers.ReLU(name=name + ".relu2")(out)
  out = _conv_bn(out, out_planes, 1, 1, 0, name + ".conv3", name + ".bn3", init)
  if stride != 1 or in_planes != out_planes:
    identity = _conv_bn(x, out_planes, 1, stride, 0, name + ".downsample.0",
                        name + ".downsample.1", init)
  else:
    identity = x
  out = keras.layers.Add(name=name + ".add")([out, identity])
  return keras.layers.ReLU(name=name + ".relu")(out)


def resnet50(num_classes, *, input_shape=(128, 128, 3), normed_head=False,
             mean=IMAGENET_MEAN, std=IMAGENET_STD, name="resnet50"):
  """torchvision's ResNet-50 (v1.5) with its initialisation.

  Args:
    normed_head: cosine `NormedDense` classifier instead of Dense.
    mean, std: per-channel standardisation inside the model (default: ImageNet's).
  Returns:
    A functional `keras.Model` from (batch, H, W, C) images to logits.
  """
  num_classes, input_shape = _check_image_args(
      "resnet50", num_classes, input_shape, mean, std)
  inputs = keras.Input(shape=input_shape, name="images")
  x = Standardize(mean, std, name="normalize")(inputs)
  x = _conv_bn(x, 64, 7, 2, 3, "conv1", "bn1", _torchvision_conv_init())
  x = keras.layers.ReLU(name="relu")(x)
  x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
  x = keras.layers.MaxPooling2D(3, strides=2, padding="valid",
                                name="maxpool")(x)
  in_planes = 64
  for stage, (planes, blocks, stride) in enumerate(
      ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), 1):
    for block in range(blocks):
      x = _bottleneck(x, in_planes, planes, stride if block == 0 else 1,
                      name=f"layer{stage}.{block}")
      in_planes = planes * 4
  x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
  logits = heads.classifier_head(
      num_classes, normed_head=normed_head,
      kernel_initializer=heads.torch_kernel_initializer(),
      bias_initializer=heads.torch_bias_initializer(2048), name="fc")(x)
  return keras.Model(inputs, logits, name=name)
