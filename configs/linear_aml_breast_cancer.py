r"""Linear AML on scikit-learn's breast-cancer data (569 × 30, 2 classes): the recipe of `benchmarks/aml_linear.py`.

  python benchmarks/aml_linear.py --datasets breast_cancer

Read by the benchmark, not by `metriclearn.main`. Everything but the data set is `configs/linear_aml_wine.py` (see
its docstring for the protocol). Results: benchmarks/RESULTS.md ("Linear AML").
"""

import importlib.util
import os

import ml_collections


def _wine_config(arg):
  # configs/ is not a package: load the sibling recipe by path, so the four recipes cannot drift apart.
  path = os.path.join(os.path.dirname(__file__), "linear_aml_wine.py")
  spec = importlib.util.spec_from_file_location("linear_aml_wine", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = _wine_config(arg)
  config.name = "linear_aml_breast_cancer"
  config.dataset = "breast_cancer"
  return config
