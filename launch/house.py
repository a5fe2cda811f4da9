"""The repository's shape, measured: import cycles, arrows against the floors, the largest
modules, README lines and the docstring/code ratio (docs/runs.md#repository-layout).

  python -m launch.house            # a Markdown summary on stdout
  python -m launch.house --json     # the same figures as JSON
"""

import ast
import collections
import io
import json
import os
import sys
import tokenize
from typing import Dict, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Imports flow down: data_prep, then m2m_tf, then launch, then benchmarks (which times launch's
# PyTorch reference model beside m2m_tf's step).
FLOORS = {"data_prep": 0, "m2m_tf": 1, "launch": 2, "benchmarks": 3}


def modules(root: str = ROOT) -> Dict[str, str]:
  """Module name -> file path, for every .py file of the four packages under `root`."""
  out = {}
  for package in FLOORS:
    for folder, _, files in os.walk(os.path.join(root, package)):
      for name in sorted(files):
        if name.endswith(".py"):
          rel = os.path.relpath(os.path.join(folder, name), root)[:-3].replace(os.sep, ".")
          out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(
              folder, name)
  return out


def _resolve(name: str, known) -> str:
  while name and name not in known:
    name = name.rpartition(".")[0]
  return name or None


def _imported_names(node, mod: str):
  """The dotted names one import statement brings in (relative imports resolved)."""
  if isinstance(node, ast.Import):
    return [a.name for a in node.names]
  if not isinstance(node, ast.ImportFrom):
    return []
  base = node.module or ""
  if node.level:
    parts = mod.split(".")[:-node.level]
    base = ".".join(parts + ([base] if base else []))
  # A name that is a module counts as that module, else as the module it comes from.
  return [f"{base}.{a.name}" for a in node.names]


def edges(mods: Dict[str, str]) -> Dict[str, Set[str]]:
  """Module -> the project's modules it imports, anywhere in its file (function-local too)."""
  out = collections.defaultdict(set)
  for mod, path in mods.items():
    with open(path) as fh:
      tree = ast.parse(fh.read())
    for node in ast.walk(tree):
      names = _imported_names(node, mod)
      for target in {_resolve(n, mods) for n in names} - {None, mod}:
        out[mod].add(target)
  return out


def cycles(graph) -> Set[Tuple[str, ...]]:
  """The strongly connected components of more than one module (Tarjan), as sorted tuples."""
  index, low, stack, on, found = {}, {}, [], set(), set()

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in sorted(graph.get(v, ())):
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

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def upward(graph) -> Set[Tuple[str, str]]:
  """Arrows from a module to one on a higher floor."""
  return {(a, b) for a, targets in graph.items() for b in targets
          if FLOORS[b.split(".")[0]] > FLOORS[a.split(".")[0]]}


def local_imports(path: str) -> int:
  """The number of import statements inside functions in one file."""
  with open(path) as fh:
    tree = ast.parse(fh.read())
  count = 0
  for fn in ast.walk(tree):
    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      count += sum(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(fn))
  return count


def _docstring_lines(tree) -> Set[int]:
  lines = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(
          getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
        lines.update(range(body[0].lineno, body[0].end_lineno + 1))
  return lines


def line_counts(path: str) -> Tuple[int, int]:
  """(docstring lines, code lines) of one file; code lines hold a token other than a comment,
  outside docstrings."""
  with open(path) as fh:
    text = fh.read()
  docs = _docstring_lines(ast.parse(text))
  code = set()
  skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
          tokenize.ENDMARKER)
  for tok in tokenize.generate_tokens(io.StringIO(text).readline):
    if tok.type not in skip:
      code.update(range(tok.start[0], tok.end[0] + 1))
  return len(docs), len(code - docs)


def _count_in(mods, package: str, needle: str) -> int:
  total = 0
  for mod, path in mods.items():
    if mod.split(".")[0] == package:
      with open(path) as fh:
        total += fh.read().count(needle)
  return total


def figures(root: str = ROOT) -> dict:
  """Every figure of the summary, as a JSON-able dict."""
  mods = modules(root)
  graph = edges(mods)
  sizes = sorted(((sum(1 for _ in open(p)), m) for m, p in mods.items()), reverse=True)
  out = {"cycles": sorted(cycles(graph)), "upward_arrows": sorted(upward(graph)),
         "largest_modules": [[m, n] for n, m in sizes[:8]],
         "readme_lines": sum(1 for _ in open(os.path.join(root, "README.md")))}
  for package in FLOORS:
    doc = code = local = 0
    for mod, path in mods.items():
      if mod.split(".")[0] == package:
        d, c = line_counts(path)
        doc, code, local = doc + d, code + c, local + local_imports(path)
    out[package] = {"docstring_lines": doc, "code_lines": code,
                    "ratio": round(doc / max(code, 1), 3), "function_local_imports": local,
                    "pylint_disables": _count_in(mods, package, "pylint" + ": disable")}
  training = [[m, n] for n, m in sizes if m.startswith("m2m_tf.training")]
  out["largest_in_m2m_tf_training"] = training[0] if training else None
  return out


def markdown(fig: dict) -> str:
  """The figures as a short Markdown summary."""
  lines = [f"- cycles: {len(fig['cycles'])}"]
  lines += [f"  - {' <-> '.join(c)}" for c in fig["cycles"]]
  lines.append(f"- upward arrows: {len(fig['upward_arrows'])}")
  lines += [f"  - {a} -> {b}" for a, b in fig["upward_arrows"]]
  lines.append("- largest modules: " + ", ".join(f"{m} {n}" for m, n in fig["largest_modules"]))
  lines.append(f"- largest in m2m_tf/training: {fig['largest_in_m2m_tf_training']}")
  lines.append(f"- README lines: {fig['readme_lines']}")
  lines.append("")
  lines.append("| package | docstring lines | code lines | ratio | function-local imports | "
               "pylint disables |")
  lines.append("|---|---|---|---|---|---|")
  for package in FLOORS:
    p = fig[package]
    lines.append(f"| {package} | {p['docstring_lines']} | {p['code_lines']} | {p['ratio']} | "
                 f"{p['function_local_imports']} | {p['pylint_disables']} |")
  return "\n".join(lines) + "\n"


def main(argv) -> int:
  fig = figures()
  sys.stdout.write(json.dumps(fig, indent=1) + "\n" if "--json" in argv else markdown(fig))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
