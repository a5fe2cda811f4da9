"""The project's import graph flows down its floors: data_prep, then m2m_tf, then launch and
benchmarks, and has no cycle. Every import counts, function-local ones included.

`KNOWN` lists the arrows and cycles still to be removed (an open issue): the test fails on any
other, and on a known one that has gone (so that the list only shrinks).
"""

import ast
import collections
import os

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOORS = {"data_prep": 0, "m2m_tf": 1, "launch": 2, "benchmarks": 2}
KNOWN = {
    "cycles": {("data_prep.registry", "data_prep.streamed", "data_prep.tfrecord_dir",
                "data_prep.user_data", "data_prep.user_recipe"),
               ("launch.torch_reference", "launch.torch_reference_bridge",
                "launch.torch_reference_report")},
    "arrows": {("benchmarks.torch_step", "launch.torch_resnet"),
               ("launch.gpu_check", "benchmarks.bench")},
}


def modules():
  """Module name -> file, for every .py file of the four packages."""
  out = {}
  for package in FLOORS:
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
      for name in files:
        if name.endswith(".py"):
          rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
          out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(
              folder, name)
  return out


def _resolve(name, known):
  while name and name not in known:
    name = name.rpartition(".")[0]
  return name or None


def edges(mods):
  """Module -> the project's modules it imports (anywhere in its file)."""
  out = collections.defaultdict(set)
  for mod, path in mods.items():
    with open(path) as fh:
      tree = ast.parse(fh.read())
    for node in ast.walk(tree):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        # A name that is a module counts as that module, else as the module it comes from.
        names = [f"{node.module}.{a.name}" for a in node.names]
      for target in {_resolve(n, mods) for n in names} - {None, mod}:
        out[mod].add(target)
  return out


def cycles(graph):
  """The strongly connected components of more than one module (Tarjan), as sorted tuples."""
  index, low, stack, on, found = {}, {}, [], set(), set()

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while not comp or comp[-1] != v:
        comp.append(stack.pop())
        on.discard(comp[-1])
      if len(comp) > 1:
        found.add(tuple(sorted(comp)))

  for v in list(graph):
    if v not in index:
      visit(v)
  return found


def upward(graph):
  """Arrows to a higher floor, or between the two top floors (launch and benchmarks)."""
  out = set()
  for a, targets in graph.items():
    for b in targets:
      fa, fb = a.split(".")[0], b.split(".")[0]
      if FLOORS[fb] > FLOORS[fa] or (fa != fb and FLOORS[fa] == FLOORS[fb]):
        out.add((a, b))
  return out


class ImportGraphTest(absltest.TestCase):

  def test_no_new_cycle_or_upward_arrow(self):
    graph = edges(modules())
    self.assertEqual(cycles(graph), KNOWN["cycles"])
    self.assertEqual(upward(graph), KNOWN["arrows"])

  def test_the_checks_find_what_they_look_for(self):
    graph = {"data_prep.a": {"m2m_tf.b"}, "m2m_tf.b": {"m2m_tf.c"}, "m2m_tf.c": {"m2m_tf.b"},
             "launch.x": {"benchmarks.y"}}
    self.assertEqual(cycles(graph), {("m2m_tf.b", "m2m_tf.c")})
    self.assertEqual(upward(graph), {("data_prep.a", "m2m_tf.b"), ("launch.x", "benchmarks.y")})


if __name__ == "__main__":
  absltest.main()
