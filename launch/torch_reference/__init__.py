"""An independent PyTorch reference of the CIFAR-10-LT rows (docs/torch_reference.md).

`python -m launch.torch_reference` (cli.py) runs it. training.py holds the recipe and the
training (PyTorch and NumPy, no TensorFlow: it runs on a GPU machine without TensorFlow),
resnet.py the official ResNet-32, bridge.py the subcommands that need m2m_tf (export,
import_tf), report.py the tables (collect, report), device.sh the device side. The arrows run
cli -> bridge, report -> training -> resnet, never back.
"""
