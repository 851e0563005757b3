r"""Linear AML on scikit-learn's iris data (150 × 4, 3 classes): the recipe of `benchmarks/aml_linear.py`.

  python benchmarks/aml_linear.py --datasets iris

Read by the benchmark, not by `metriclearn.main`. Everything but the data set is `configs/linear_aml_wine.py` (see
its docstring for the protocol). Results: benchmarks/RESULTS.md ("Linear AML").
"""

import ml_collections

from metriclearn import config_util


def _wine_config(arg):
  return config_util.sibling_config(__file__, "linear_aml_wine.py", arg)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = _wine_config(arg)
  config.name = "linear_aml_iris"
  config.dataset = "iris"
  return config
