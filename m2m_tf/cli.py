"""Command-line helpers shared by `m2m_tf.main` and the `launch/` commands."""

import sys
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags

# absl's help flags; `run_absl` answers them itself (see there).
HELP_ARGS = ("-h", "-?", "-help", "--help", "-helpshort", "--helpshort", "-helpfull",
             "--helpfull")


def run_absl(main: Callable, argv: Optional[Sequence[str]] = None,
             flag_modules: Sequence[str] = ()) -> None:
  """`absl.app.run(main)`, except that a help flag prints the usage and exits 0.

  absl exits with status 1 after --help, which scripts and CI read as a
  failure; here help is answered before any flag is parsed or work is done.

  Args:
    main: the absl main function.
    argv: the command line (default sys.argv), program name first.
    flag_modules: further modules whose flags the short help lists (absl's
      short help lists only the main module's own flags).
  """
  argv = list(sys.argv if argv is None else argv)
  args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
  asked = [a for a in args if a in HELP_ARGS]
  if asked:
    short = not any(a.endswith("helpfull") for a in asked)
    app.usage(shorthelp=short, writeto_stdout=True)
    if short:
      for module in flag_modules:
        print(flags.FLAGS.module_help(module))
    sys.exit(0)
  app.run(main, argv=argv)
