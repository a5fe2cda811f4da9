"""Models (MLP, ResNets) that map inputs to logits, and checkpoint import."""

from m2m_tf.models.folding import inference_fn
from m2m_tf.models.heads import NormedDense
from m2m_tf.models.mlp import mlp
from m2m_tf.models.registry import ARCHITECTURES
from m2m_tf.models.registry import build_classifier
from m2m_tf.models.registry import build_model
from m2m_tf.models.resnet import CIFAR10_MEAN
from m2m_tf.models.resnet import CIFAR10_STD
from m2m_tf.models.resnet import DownsampleA
from m2m_tf.models.resnet import IMAGENET_MEAN
from m2m_tf.models.resnet import IMAGENET_STD
from m2m_tf.models.resnet import cifar_resnet
from m2m_tf.models.resnet import preact_resnet18
from m2m_tf.models.resnet import resnet32
from m2m_tf.models.resnet import resnet50
from m2m_tf.models.standardize import Standardize
from m2m_tf.models.torch_import import load_torch_state_dict

__all__ = [
    "ARCHITECTURES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DownsampleA",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "inference_fn",
    "NormedDense",
    "Standardize",
    "build_classifier",
    "build_model",
    "cifar_resnet",
    "load_torch_state_dict",
    "mlp",
    "preact_resnet18",
    "resnet32",
    "resnet50",
]
