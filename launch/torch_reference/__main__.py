"""`python -m launch.torch_reference`: the PyTorch reference's command line (cli.py)."""

import sys

from launch.torch_reference import cli

sys.exit(cli.main())
