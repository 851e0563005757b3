r"""Linear AML on scikit-learn's wine data (178 × 13, 3 classes): the recipe of `benchmarks/aml_linear.py`.

  python benchmarks/aml_linear.py --datasets wine

Read by the benchmark, not by `metriclearn.main` (which trains deep embeddings): 10 stratified 70/30 splits,
features standardised on the training part, random pairs as the released code draws them, then Euclidean, the GMML
closed form, linear AML (released solver and optax min–max) and metric-learn's LMNN, ITML and NCA, scored by k-NN
error and pair-verification AUC on the test part. The other `linear_aml_<dataset>.py` load this one and change the
data set and what depends on it. Results: benchmarks/RESULTS.md ("Linear AML").
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = "linear_aml_wine"
  config.dataset = "wine"          # sklearn.datasets.load_<dataset>
  config.seed = 0                  # splits use seed + i, pairs seed + 1000 + i
  config.num_splits = 10
  config.test_fraction = 0.3
  config.knn_k = 3                 # k of the k-NN classifier (and LMNN's target neighbours)
  config.num_pairs = 2000          # random ordered pairs of the training part (2000 in the released example)
  # Added to the mean scatters A/N and B/N (linear_aml.pair_scatter). 0 = as released; needed where features are
  # (nearly) collinear or constant.
  config.ridge = 0.0
  # Linear AML (aml.md e): the released example's α, β and solver; M₀ = I.
  config.aml = dict(alpha=10.0, beta=1.0, dissimilar_term="official")
  config.backtracking = dict(max_iter=100, initial_step=1e-3)
  # The optax min–max with explicit adversarial pairs (linear_aml.fit_minmax), alternating (Π frozen in the M
  # update; True = bilevel, ~10× slower per step); Adam on the Cholesky factor of M.
  config.minmax = dict(steps=300, confusion_steps=10, through_confusion=False, learning_rate=1e-2)
  # metric-learn 0.7.0 baselines, run in their own virtual environment (ENVIRONMENT.md).
  config.metric_learn = dict(lmnn=dict(max_iter=1000), itml=dict(max_iter=1000), nca=dict(max_iter=100))
  if arg == "smoke":
    config.num_splits = 2
    config.num_pairs = 300
    config.backtracking.max_iter = 10
    config.minmax.steps = 20
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; valid: 'smoke' or none")
  return config
