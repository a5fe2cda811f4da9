"""`python -m m2m_tf.report RUN_DIR` (m2m_tf/report/cli.py)."""

import os
import sys

from m2m_tf import quiet

if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines after start-up
  quiet.import_tensorflow()
  from m2m_tf.report.cli import main  # lazy: after TensorFlow's quiet import, which it needs
  sys.exit(main())
