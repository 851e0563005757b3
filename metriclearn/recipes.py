r"""The training recipes in `configs/`, listed: `python -m metriclearn.recipes [DIR]`.

Prints every recipe file with the first line of its docstring and, when the file defines a module-level
`RECIPE_ARGS: dict[str, str]` (argument → one-line description), the arguments it takes (`--config=FILE:ARG`).
`DIR` defaults to the `configs/` directory of this checkout (beside the `metriclearn` package), else `./configs`.

Files are read with `ast`, not imported, so listing is instant and has no side effects; a `RECIPE_ARGS` that is not a
literal (built by code) is read by importing that one file.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import sys
from collections.abc import Sequence

from metriclearn import config_util


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One recipe file: its path, the first line of its docstring and its documented arguments (may be empty)."""

  path: str
  summary: str
  args: dict[str, str]

  @property
  def name(self) -> str:
    return os.path.basename(self.path).removesuffix(".py")

  @property
  def family(self) -> str:
    """The data set (or group) the recipe belongs to: its file name up to the first underscore."""
    return self.name.split("_", 1)[0]


def default_directory() -> str:
  """`configs/` of this checkout (the repository root holds both `metriclearn/` and `configs/`), else `./configs`."""
  beside_package = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  return beside_package if os.path.isdir(beside_package) else os.path.abspath("configs")


def _recipe_args(path: str, tree: ast.Module) -> dict[str, str]:
  for node in tree.body:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    if any(isinstance(target, ast.Name) and target.id == "RECIPE_ARGS" for target in targets):
      try:
        value = ast.literal_eval(node.value)
      except ValueError:  # built by code: import the file (it only defines tables and get_config)
        value = getattr(config_util.sibling_module(path, os.path.basename(path)), "RECIPE_ARGS")
      return {str(key): " ".join(str(text).split()) for key, text in dict(value).items()}
  return {}


def describe(path: str) -> Recipe:
  """The `Recipe` of one file."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), filename=path)
  docstring = (ast.get_docstring(tree) or "").strip()
  summary = docstring.splitlines()[0].strip() if docstring else "(no docstring)"
  return Recipe(path, summary, _recipe_args(path, tree))


def list_recipes(directory: str | None = None) -> list[Recipe]:
  """Every `*.py` recipe in `directory` (default: `default_directory()`), sorted by name.

  Raises:
    NotADirectoryError: `directory` is not a directory.
  """
  directory = directory or default_directory()
  if not os.path.isdir(directory):
    raise NotADirectoryError(f"no recipe directory {directory}; pass the path of the repository's configs/ "
                             "directory: python -m metriclearn.recipes path/to/configs")
  names = sorted(n for n in os.listdir(directory) if n.endswith(".py") and not n.startswith("_"))
  return [describe(os.path.join(directory, name)) for name in names]


def families(recipes: Sequence[Recipe]) -> dict[str, int]:
  """Recipe count per family, in first-seen order."""
  counts: dict[str, int] = {}
  for recipe in recipes:
    counts[recipe.family] = counts.get(recipe.family, 0) + 1
  return counts


def format_listing(recipes: Sequence[Recipe], directory: str) -> str:
  lines = [f"{len(recipes)} recipes in {directory} (run one: python -m metriclearn.main --config={directory}/NAME.py"
           "[:ARG] --workdir=DIR)"]
  width = max((len(r.name) for r in recipes), default=0) + 5
  family = None
  for recipe in recipes:
    if recipe.family != family:
      family = recipe.family
      lines.append(f"\n{family}:")
    lines.append(f"  {recipe.name + '.py':{width}s} {recipe.summary}")
    for arg, text in recipe.args.items():
      lines.append(f"  {'':{width}s}   :{arg}  {text}")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if any(a in ("-h", "--help") for a in argv) or len(argv) > 1:
    print(__doc__.split("\n\n")[0] + "\n\nUsage: python -m metriclearn.recipes [DIR]", file=sys.stdout)
    return 0 if len(argv) <= 1 else 2
  directory = os.path.abspath(argv[0]) if argv else default_directory()
  try:
    recipes = list_recipes(directory)
  except NotADirectoryError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  shown = os.path.relpath(directory)
  print(format_listing(recipes, directory if shown.startswith("..") else shown))
  return 0


if __name__ == "__main__":
  sys.exit(main())
