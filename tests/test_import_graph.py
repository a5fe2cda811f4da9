"""The project's import graph flows down its floors (data_prep, m2m_tf, launch, benchmarks) and
has no cycle; inside m2m_tf the pure parts do not reach up into training. Every import counts,
function-local ones included, and a function-local import says why it is lazy."""

import ast
import os
import tempfile

from absl.testing import absltest

from launch import house

# Inside m2m_tf: (importer prefix, imported prefix) pairs that must not occur. The M2m math and
# the models know nothing of configs or training; the config knows nothing of the trainer.
FORBIDDEN = (
    ("m2m_tf.m2m", "m2m_tf.config"), ("m2m_tf.m2m", "m2m_tf.training"),
    ("m2m_tf.models", "m2m_tf.config"), ("m2m_tf.models", "m2m_tf.training"),
    ("m2m_tf.config", "m2m_tf.training"), ("m2m_tf.config_fields", "m2m_tf.training"),
)


def forbidden(graph):
  """The arrows of `graph` that FORBIDDEN names."""
  return {(a, b) for a, targets in graph.items() for b in targets
          for src, dst in FORBIDDEN if (a == src or a.startswith(src + "."))
          and (b == dst or b.startswith(dst + "."))}


def _explained(lines, lineno: int) -> bool:
  """Whether the import on `lineno` (1-based), or the block of imports it closes, carries a
  comment, or a comment line stands just above that block."""
  i = lineno - 1
  while True:
    if "#" in lines[i]:
      return True
    above = lines[i - 1].strip() if i else ""
    if not above.startswith(("import ", "from ")):
      return above.startswith("#")
    i -= 1


def unexplained_local_imports(mods):
  """(module, line) of each function-local import that does not say why it is lazy."""
  out = set()
  for mod, path in mods.items():
    with open(path) as fh:
      text = fh.read()
    lines = text.splitlines()
    for fn in ast.walk(ast.parse(text)):
      if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        continue
      for node in ast.walk(fn):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not _explained(lines, node.lineno):
          out.add((mod, node.lineno))
  return out


class ImportGraphTest(absltest.TestCase):

  def test_no_cycle_no_upward_arrow_no_forbidden_arrow(self):
    graph = house.edges(house.modules())
    self.assertEqual(house.cycles(graph), set())
    self.assertEqual(house.upward(graph), set())
    self.assertEqual(forbidden(graph), set())

  def test_every_function_local_import_says_why(self):
    self.assertEqual(unexplained_local_imports(house.modules()), set())

  def test_the_checks_find_what_they_look_for(self):
    graph = {"data_prep.a": {"m2m_tf.b"}, "m2m_tf.b": {"m2m_tf.c"}, "m2m_tf.c": {"m2m_tf.b"},
             "launch.x": {"benchmarks.y"}, "benchmarks.y": {"launch.x"},
             "m2m_tf.m2m.gen": {"m2m_tf.config"}, "m2m_tf.configx": {"m2m_tf.training.run"}}
    self.assertEqual(house.cycles(graph), {("m2m_tf.b", "m2m_tf.c"),
                                           ("benchmarks.y", "launch.x")})
    self.assertEqual(house.upward(graph), {("data_prep.a", "m2m_tf.b"),
                                           ("launch.x", "benchmarks.y")})
    self.assertEqual(forbidden(graph), {("m2m_tf.m2m.gen", "m2m_tf.config")})
    lines = ["def f():", "  import a", "  x = 1", "  # why", "  import b", "  import c",
             "  import d  # why", "  import e"]
    self.assertEqual([n for n in range(2, 9) if lines[n - 1].strip().startswith("import")
                      and not _explained(lines, n)], [2])

  def test_relative_and_function_local_imports_are_edges(self):
    files = {"m2m_tf/__init__.py": "", "m2m_tf/b.py": "from m2m_tf import a\n",
             "m2m_tf/a.py": "def f():\n  from . import b  # lazy: test\n",
             **{f"{p}/__init__.py": "" for p in ("data_prep", "launch", "benchmarks")}}
    with tempfile.TemporaryDirectory() as root:
      for rel, text in files.items():
        os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(root, rel), "w") as fh:
          fh.write(text)
      graph = house.edges(house.modules(root))
      self.assertEqual(house.cycles(graph), {("m2m_tf.a", "m2m_tf.b")})
      self.assertEqual(house.local_imports(os.path.join(root, "m2m_tf/a.py")), 1)

  def test_docstring_and_code_lines(self):
    text = ('"""Module doc,\n'           # 1  docstring
            'two lines."""\n'            # 2  docstring
            '\n'                         # 3  blank
            '# a comment\n'              # 4  comment
            'X = {"a": 1,\n'             # 5  code
            '     "b": 2}  # trailing\n'  # 6  code
            'def f():\n'                 # 7  code
            '  """One line."""\n'        # 8  docstring
            '  s = """not a\n'           # 9  code (a string, not a docstring)
            'docstring"""\n'             # 10 code
            '  return s\n')              # 11 code
    with tempfile.TemporaryDirectory() as root:
      path = os.path.join(root, "m.py")
      with open(path, "w") as fh:
        fh.write(text)
      self.assertEqual(house.line_counts(path), (3, 6))


if __name__ == "__main__":
  absltest.main()
