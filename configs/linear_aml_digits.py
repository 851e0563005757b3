r"""Linear AML on scikit-learn's digits data (1797 × 64, 10 classes; pixels constant on a training part are dropped by the benchmark): the recipe of `benchmarks/aml_linear.py`.

  python benchmarks/aml_linear.py --datasets digits

Read by the benchmark, not by `metriclearn.main`. Everything but the data set is `configs/linear_aml_wine.py` (see
its docstring for the protocol). Results: benchmarks/RESULTS.md ("Linear AML").
"""

import ml_collections

from metriclearn import config_util


def _wine_config(arg):
  return config_util.sibling_config(__file__, "linear_aml_wine.py", arg)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = _wine_config(arg)
  config.name = "linear_aml_digits"
  config.dataset = "digits"
  # Some pixels are almost always blank: A is then numerically singular and the GMML point A⁻¹ ♯ B (which needs
  # A^{−1/2}) loses positive definiteness (seen: λ_min = −0.006 at ridge 0). 1e-3 on the mean scatters fixes it.
  config.ridge = 1e-3
  if arg != "smoke":
    # 10 classes: 5000 random pairs hold about 500 similar ones, enough to estimate A in 60 dimensions.
    config.num_pairs = 5000
  return config
