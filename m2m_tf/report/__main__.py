"""`python -m m2m_tf.report RUN_DIR` (m2m_tf/report/cli.py)."""

import os
import sys

# TensorFlow's C++ INFO lines are noise to a user (as in m2m_tf.main); set before TF loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from m2m_tf.report.cli import main  # pylint: disable=wrong-import-position

if __name__ == "__main__":
  sys.exit(main())
