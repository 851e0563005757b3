"""Linear AML (Chen et al., IJCAI 2018): an SPD Mahalanobis matrix M learned on fixed feature vectors.

The model of the authors' released MATLAB code (`functioncs/AML_Core`, `papers/aml.md` c.2–d), in two forms:

* **closed form (bilevel, as released):** the confusion stage is solved in closed form and substituted, leaving one
  objective in M, the trace form of aml.md c.2 (`objective`):

    J(M) = (1/N)·[tr(MA) + tr(M⁻¹B) + α·adv(M)],
    official:        adv = β²·tr(M⁵(2I + β²M²)⁻²A) + β²(2 + β²)⁻²·tr(MB),
    gmml_consistent: adv = β⁴·tr(M⁵(2I + β²M²)⁻²A) + β⁴(2 + β²)⁻²·tr(M⁻¹B),

  with A, B the scatters of similar / dissimilar pair differences. It is minimised by the released full-batch
  gradient descent with Armijo backtracking and the GMML "special point" (`fit_backtracking`, aml.md d), with the
  gradient from autodiff: the released hand-written gradient has a sign error (aml.md c.4).
* **explicit min–max:** adversarial pairs Π as variables. A confusion optimiser takes K optax steps from Π = X on
  the confusion objective of aml.md c.3 (`confusion_objective`, `confuse`); a distinguishment optimiser updates M
  (through a Cholesky parametrisation) on L(X) + α·L(Π) (`minmax_objective`, `fit_minmax`). With
  `through_confusion=False` the pairs are frozen (alternating updates); with True the gradient goes through the K
  unrolled confusion steps (bilevel), and for large K it equals the gradient of J above.

Departure: the explicit Π and its confusion objective are our reconstruction (aml.md c.3, tagged [I]); the
  released code has only the closed form. At the closed-form Π both readings of the dissimilar term reproduce J.
Not implemented: the released minibatch variant (`aml_bi_level_sgd.m`, aml.md d), whose best-iterate selection is
  label-scrambled; `fit_minmax` is the optax path.

Everything here is meant to run in float64: `fit` and `fit_minmax`/`fit_backtracking` enter `jax.enable_x64(True)`
themselves (the rest of the library stays float32); call the pure functions inside that context for float64.
Square roots and inverses use Cholesky factors and linear solves, never `eigh` under autodiff (its derivative is
NaN at M = I, where every eigenvalue is equal; aml.md h).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

DISSIMILAR_TERMS = ("official", "gmml_consistent")


def _check_dissimilar_term(dissimilar_term: str) -> None:
  if dissimilar_term not in DISSIMILAR_TERMS:
    raise ValueError(f"unknown dissimilar_term {dissimilar_term!r}; valid: {', '.join(DISSIMILAR_TERMS)}")


def _symmetrize(m: jax.Array) -> jax.Array:
  return 0.5 * (m + m.T)


def _trace_product(a: jax.Array, b: jax.Array) -> jax.Array:
  """tr(a·b) without forming the product."""
  return jnp.sum(a * b.T)


def _solve_spd(m: jax.Array, rhs: jax.Array) -> jax.Array:
  """m⁻¹·rhs for SPD m and a few right-hand sides (Cholesky; NaN if m is not positive definite)."""
  return jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(m), True), rhs)


def _inverse_spd(m: jax.Array) -> jax.Array:
  """m⁻¹ for SPD m through its Cholesky factor, symmetrised. For thousands of right-hand sides (pair differences)
  m⁻¹ then a matmul is faster than one triangular solve on CPU (measured: 12.6 → 0.8 ms for 5000 × 60)."""
  return _symmetrize(_solve_spd(m, jnp.eye(m.shape[0], dtype=m.dtype)))


# ----------------------------------------------------------------------------------------------------------------
# Pairs and their scatters (get_training_data.m).


def sample_pairs(labels: np.ndarray, num_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`num_pairs` distinct ordered index pairs (i, j) drawn from all n² (self-pairs possible), as the released code.

  Returns:
    `first`, `second` (`i64[N]` indices) and `y` (`i64[N]`: +1 for the same class, −1 otherwise).
  """
  labels = np.asarray(labels)
  n = len(labels)
  if not 0 < num_pairs <= n * n:
    raise ValueError(f"num_pairs must be in [1, n²] = [1, {n * n}] for {n} samples, got {num_pairs}")
  flat = np.random.default_rng(seed).choice(n * n, size=num_pairs, replace=False)
  first, second = flat // n, flat % n
  return first, second, np.where(labels[first] == labels[second], 1, -1)


def pair_scatter(pair_differences: jax.Array, y: jax.Array, *, ridge: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """A = Σ_{y=+1} x̂x̂ᵀ and B = Σ_{y=−1} x̂x̂ᵀ (aml.md b).

  Args:
    pair_differences: `f[N, d]`, x̂_i = x_i − x_i′.
    y: `[N]` pair labels ±1.
    ridge: adds `ridge·N·I` to both, i.e. `ridge·I` to the mean scatters A/N, B/N.
      Departure: the released code adds none; a data set with a constant feature (digits) needs one, since the
      objective inverts B and the GMML point inverts A.
  """
  num_pairs, dim = pair_differences.shape
  similar = (y > 0).astype(pair_differences.dtype)[:, None]
  a = (pair_differences * similar).T @ pair_differences
  b = (pair_differences * (1 - similar)).T @ pair_differences
  eye = jnp.eye(dim, dtype=pair_differences.dtype)
  return a + ridge * num_pairs * eye, b + ridge * num_pairs * eye


# ----------------------------------------------------------------------------------------------------------------
# The closed-form (bilevel) objective and the GMML point.


def adversarial_similar_term(metric: jax.Array, similar_scatter: jax.Array, *, beta: float) -> jax.Array:
  """tr(M⁵(2I + β²M²)⁻²A), computed as tr(G·M·G·A) with G = (2I + β²M²)⁻¹M² (a solve, no eigh; aml.md h)."""
  m2 = metric @ metric
  g = _symmetrize(_solve_spd(2.0 * jnp.eye(metric.shape[0], dtype=metric.dtype) + beta**2 * m2, m2))
  return _trace_product(g @ metric @ g, similar_scatter)


def objective(metric: jax.Array, similar_scatter: jax.Array, dissimilar_scatter: jax.Array, num_pairs: int, *,
              alpha: float = 10.0, beta: float = 1.0, dissimilar_term: str = "official") -> jax.Array:
  """J(M), the objective the released code minimises, in the trace form of aml.md c.2 (see the module docstring).

  α = 0 gives the GMML loss (1/N)[tr(MA) + tr(M⁻¹B)] (Zadeh et al. 2016).

  Args:
    metric: `f[d, d]` SPD M.
    similar_scatter, dissimilar_scatter: `f[d, d]` A and B (`pair_scatter`); B must be PD.
    num_pairs: N, the normalisation of the released code.
    alpha: weight of the adversarial term (10 in the released example).
    beta: confusion-stage parameter (1 in the released example).
    dissimilar_term: "official" (the released code's β²(2+β²)⁻²·tr(MB), which pulls dissimilar pairs together)
      or "gmml_consistent" (β⁴ on both adversarial terms and tr(M⁻¹B) for dissimilar pairs: the GMML loss of the
      c.3 confusion solution). The spec leaves the paper's choice open (aml.md c.3); "official" follows the code.

  Returns:
    `[]` scalar; NaN if M is not positive definite.
  """
  _check_dissimilar_term(dissimilar_term)
  inverse_b = _solve_spd(metric, dissimilar_scatter)
  gmml = _trace_product(metric, similar_scatter) + jnp.trace(inverse_b)
  similar_adv = adversarial_similar_term(metric, similar_scatter, beta=beta)
  if dissimilar_term == "official":
    adv = beta**2 * similar_adv + beta**2 / (2 + beta**2) ** 2 * _trace_product(metric, dissimilar_scatter)
  else:
    adv = beta**4 * similar_adv + beta**4 / (2 + beta**2) ** 2 * jnp.trace(inverse_b)
  return (gmml + alpha * adv) / num_pairs


def gmml_closed_form(similar_scatter: jax.Array, dissimilar_scatter: jax.Array) -> jax.Array:
  """The GMML minimiser A⁻¹ ♯ B = A^{−1/2}(A^{1/2}BA^{1/2})^{1/2}A^{−1/2}: the α = 0 "special point" (aml.md d.3).

  Forward only (eigh is safe here: it is not differentiated). A and B must be PD.
  """
  def sqrt_and_inverse_sqrt(m):
    eigenvalues, eigenvectors = jnp.linalg.eigh(_symmetrize(m))
    eigenvalues = jnp.maximum(eigenvalues, 0.0)
    root = (eigenvectors * jnp.sqrt(eigenvalues)) @ eigenvectors.T
    inverse_root = (eigenvectors / jnp.sqrt(eigenvalues)) @ eigenvectors.T
    return root, inverse_root

  a_half, a_inverse_half = sqrt_and_inverse_sqrt(similar_scatter)
  inner_half, _ = sqrt_and_inverse_sqrt(a_half @ dissimilar_scatter @ a_half)
  return _symmetrize(a_inverse_half @ inner_half @ a_inverse_half)


# ----------------------------------------------------------------------------------------------------------------
# Explicit adversarial pairs: the confusion stage (aml.md c.3) and the distinguishment objective.


def _squared_distances(matrix: jax.Array, differences: jax.Array) -> jax.Array:
  """`[N]` x̂ᵀ·matrix·x̂ for the rows of `differences` `[N, d]`."""
  return jnp.sum((differences @ matrix) * differences, axis=1)


def gmml_pair_losses(metric: jax.Array, differences: jax.Array, y: jax.Array, *, flip: bool = False,
                     metric_inverse: jax.Array | None = None) -> jax.Array:
  """`[N]` per-pair GMML loss: Dist_M for similar pairs, Dist_{M⁻¹} for dissimilar ones (labels −y if `flip`).

  `metric_inverse`: M⁻¹ if already computed (a caller evaluating many times at one M).
  """
  similar = (y < 0) if flip else (y > 0)
  metric_inverse = _inverse_spd(metric) if metric_inverse is None else metric_inverse
  return jnp.where(similar, _squared_distances(metric, differences), _squared_distances(metric_inverse, differences))


def confusion_objective(adversarial: jax.Array, pairs: jax.Array, y: jax.Array, metric: jax.Array, *,
                        beta: float = 1.0, metric_inverse: jax.Array | None = None) -> jax.Array:
  """The confusion stage of aml.md c.3, minimised over Π: Σ_i Dist_{M^{−y_i}}(π_i, π_i′) + β²[Dist_M(x_i, π_i) +
  Dist_M(x_i′, π_i′)].

  The first term is the GMML loss with the *opposite* label (make similar pairs look dissimilar and vice versa: the
  GMML way of "maximising L(M, Π)" without an unbounded maximisation), the second the closeness regulariser
  Dist_M(X, Π) of the paper's Figure 1. A sum, not a mean: the pairs' problems are independent, so a step size
  suits every N. Its minimiser is `closed_form_adversarial_pairs`.

  Args:
    adversarial: `f[N, 2, d]` Π, rows (π_i, π_i′). pairs: `f[N, 2, d]` X. y: `[N]` ±1. metric: `f[d, d]` M.
    metric_inverse: M⁻¹, if the caller has it (`confuse` computes it once for its K steps).
  """
  closeness = (_squared_distances(metric, adversarial[:, 0] - pairs[:, 0])
               + _squared_distances(metric, adversarial[:, 1] - pairs[:, 1]))
  opposite = gmml_pair_losses(metric, adversarial[:, 0] - adversarial[:, 1], y, flip=True,
                              metric_inverse=metric_inverse)
  return jnp.sum(opposite + beta**2 * closeness)


def closed_form_adversarial_pairs(metric: jax.Array, pairs: jax.Array, y: jax.Array, *,
                                  beta: float = 1.0) -> jax.Array:
  """The minimiser of `confusion_objective`: π + π′ = x + x′, π − π′ = β²K(2I + β²K)⁻¹x̂ with K = M^{1+y}."""
  dim = metric.shape[0]
  eye = jnp.eye(dim, dtype=metric.dtype)
  differences = pairs[:, 0] - pairs[:, 1]
  m2 = metric @ metric
  similar_map = beta**2 * _symmetrize(_solve_spd(2 * eye + beta**2 * m2, m2))  # β²M²(2I + β²M²)⁻¹, symmetric
  adversarial_differences = jnp.where((y > 0)[:, None], differences @ similar_map,
                                      beta**2 / (2 + beta**2) * differences)
  sums = pairs[:, 0] + pairs[:, 1]
  return jnp.stack([sums + adversarial_differences, sums - adversarial_differences], axis=1) / 2


def adversarial_loss(metric: jax.Array, adversarial: jax.Array, y: jax.Array, *, beta: float = 1.0,
                     dissimilar_term: str = "official") -> jax.Array:
  """L(M, Π) of the distinguishment stage (a sum over pairs).

  "gmml_consistent": the GMML loss of Π with the original labels. "official": β⁻²·Σ_i Dist_M(π_i, π_i′) for every
  pair, the reading of the released code in aml.md c.3 (the β⁻² makes it equal the code's term at the closed-form
  Π of `confusion_objective`, whose stationary point carries β⁴ where the code has β²).
  """
  _check_dissimilar_term(dissimilar_term)
  differences = adversarial[:, 0] - adversarial[:, 1]
  if dissimilar_term == "official":
    return jnp.sum(_squared_distances(metric, differences)) / beta**2
  return jnp.sum(gmml_pair_losses(metric, differences, y))


def minmax_objective(metric: jax.Array, adversarial: jax.Array, pairs: jax.Array, y: jax.Array, *,
                     alpha: float = 10.0, beta: float = 1.0, dissimilar_term: str = "official",
                     num_pairs: int | None = None) -> jax.Array:
  """(1/N)[L(M, X) + α·L(M, Π)]; at Π = `closed_form_adversarial_pairs(M)` it equals `objective(M)`.

  `num_pairs` (default: the number of rows of `pairs`) is N, kept apart so that `ridge_pairs` do not count.
  """
  clean = jnp.sum(gmml_pair_losses(metric, pairs[:, 0] - pairs[:, 1], y))
  adv = adversarial_loss(metric, adversarial, y, beta=beta, dissimilar_term=dissimilar_term)
  return (clean + alpha * adv) / (pairs.shape[0] if num_pairs is None else num_pairs)


def ridge_pairs(dim: int, ridge: float, num_pairs: int) -> tuple[np.ndarray, np.ndarray]:
  """2d virtual pairs whose scatters are `ridge·N·I` each: the `pair_scatter(ridge=...)` of the explicit form.

  Returns:
    `f64[2d, 2, d]` pairs (√(ridge·N)·e_k, 0), first d similar then d dissimilar, and their labels `[2d]`.
  """
  points = np.sqrt(ridge * num_pairs) * np.eye(dim)
  pairs = np.stack([np.concatenate([points, points]), np.zeros((2 * dim, dim))], axis=1)
  return pairs, np.concatenate([np.ones(dim, np.int64), -np.ones(dim, np.int64)])


def safe_confusion_learning_rate(metric: jax.Array, *, beta: float = 1.0) -> jax.Array:
  """1/L for gradient descent on `confusion_objective`, L = 4·max(λ_max(M), 1/λ_min(M)) + 2β²λ_max(M) bounding its
  Hessian; not differentiated (the fixed point does not depend on the step size)."""
  eigenvalues = jnp.linalg.eigvalsh(jax.lax.stop_gradient(metric))
  return 1.0 / (4 * jnp.maximum(eigenvalues[-1], 1 / eigenvalues[0]) + 2 * beta**2 * eigenvalues[-1])


def confuse(metric: jax.Array, pairs: jax.Array, y: jax.Array, *, beta: float = 1.0, steps: int = 20,
            optimizer: optax.GradientTransformation | None = None) -> jax.Array:
  """Π after `steps` optax steps on `confusion_objective` from Π = X (differentiable through the steps).

  Args:
    optimizer: the confusion optimiser; default `optax.sgd(safe_confusion_learning_rate(M))`, which converges to
      `closed_form_adversarial_pairs` at a rate set by the condition number of M.
  """
  pairs = jnp.asarray(pairs, metric.dtype)
  if optimizer is None:
    optimizer = optax.sgd(safe_confusion_learning_rate(metric, beta=beta))
  grad_fn = jax.grad(confusion_objective)
  metric_inverse = _inverse_spd(metric)  # once for the K steps

  def step(_, carry):
    adversarial, opt_state = carry
    gradient = grad_fn(adversarial, pairs, y, metric, beta=beta, metric_inverse=metric_inverse)
    updates, opt_state = optimizer.update(gradient, opt_state, adversarial)
    return optax.apply_updates(adversarial, updates), opt_state

  adversarial, _ = jax.lax.fori_loop(0, steps, step, (pairs, optimizer.init(pairs)))
  return adversarial


# ----------------------------------------------------------------------------------------------------------------
# SPD parametrisation for the optax path.


def cholesky_params(metric: jax.Array) -> dict[str, jax.Array]:
  """Parameters of `metric_from_params` that give `metric` (M₀ = I gives zeros)."""
  lower = jnp.linalg.cholesky(metric)
  return {"lower": jnp.tril(lower, -1), "log_diagonal": jnp.log(jnp.diag(lower))}


def metric_from_params(params: dict[str, jax.Array]) -> jax.Array:
  """M = LLᵀ with L lower-triangular, diagonal exp(log_diagonal) > 0: SPD for every parameter value.

  Departure: the released code keeps M SPD by rejecting line-search steps; an optax update needs an
  unconstrained parametrisation.
  """
  lower = jnp.tril(params["lower"], -1) + jnp.diag(jnp.exp(params["log_diagonal"]))
  return lower @ lower.T


# ----------------------------------------------------------------------------------------------------------------
# Solvers.


@dataclasses.dataclass
class LinearAMLResult:
  """A fitted metric: `metric` `f64[d, d]` SPD, the final `objective` J(M), and solver `info`."""

  metric: np.ndarray
  objective: float
  info: dict[str, Any]

  def transform(self, x: np.ndarray) -> np.ndarray:
    """Rows of `x` `[n, d]` mapped so that Euclidean distances are Mahalanobis distances under M (x ↦ Lᵀx)."""
    return np.asarray(x, np.float64) @ np.linalg.cholesky(self.metric)


def fit_backtracking(similar_scatter, dissimilar_scatter, num_pairs: int, *, alpha: float = 10.0, beta: float = 1.0,
                     dissimilar_term: str = "official", metric_init=None, max_iter: int = 100,
                     initial_step: float = 1e-3, max_tries: int = 51, tolerance: float = 1e-10,
                     special_point: bool = True) -> LinearAMLResult:
  """The released full-batch solver (`aml_bi_level.m`, aml.md d): gradient descent on `objective` with Armijo
  backtracking (constant 0.5, halving, steps to a non-PD M rejected), the best iterate kept, then the GMML point
  if it is better. The gradient is autodiff's, symmetrised (aml.md c.4: the released one has a sign error).
  """
  with jax.enable_x64(True):
    a = jnp.asarray(similar_scatter, jnp.float64)
    b = jnp.asarray(dissimilar_scatter, jnp.float64)
    kwargs = dict(alpha=alpha, beta=beta, dissimilar_term=dissimilar_term)
    value_fn = functools.partial(jax.jit(lambda m, a, b: objective(m, a, b, num_pairs, **kwargs)), a=a, b=b)
    grad_fn = functools.partial(
        jax.jit(lambda m, a, b: _symmetrize(jax.grad(objective)(m, a, b, num_pairs, **kwargs))), a=a, b=b)
    is_pd = lambda m: bool(np.all(np.linalg.eigvalsh(np.asarray(m)) > 0))
    metric = jnp.eye(a.shape[0], dtype=jnp.float64) if metric_init is None else jnp.asarray(metric_init, jnp.float64)
    best_metric, best_value, previous, iterations, accepted_steps = metric, np.inf, None, 0, 0
    for iterations in range(1, max_iter + 1):
      value = float(value_fn(metric))
      if value < best_value:
        best_metric, best_value = metric, value
      if previous is not None and abs(value - previous) / abs(previous) < tolerance:
        break
      previous = value
      gradient = grad_fn(metric)
      squared_norm = float(jnp.sum(gradient**2))
      step = initial_step
      for _ in range(max_tries):
        candidate = _symmetrize(metric - step * gradient)
        if is_pd(candidate) and value - float(value_fn(candidate)) >= 0.5 * step * squared_norm:
          metric = candidate
          accepted_steps += 1
          break
        step /= 2
    info = {"solver": "backtracking", "iterations": iterations, "accepted_steps": accepted_steps,
            "used_gmml_point": False}
    if special_point:
      gmml_metric = gmml_closed_form(a, b)
      gmml_value = float(value_fn(gmml_metric))
      if gmml_value < best_value:
        best_metric, best_value, info["used_gmml_point"] = gmml_metric, gmml_value, True
    return LinearAMLResult(np.asarray(best_metric), float(best_value), info)


def fit_minmax(pairs, y, *, alpha: float = 10.0, beta: float = 1.0, dissimilar_term: str = "official",
               confusion_steps: int = 20, through_confusion: bool = True, steps: int = 500,
               optimizer: optax.GradientTransformation | None = None,
               confusion_optimizer: optax.GradientTransformation | None = None,
               metric_init=None, ridge: float = 0.0) -> LinearAMLResult:
  """The min–max with explicit adversarial pairs, as alternating optax updates (one `lax.scan`, float64).

  Each step: Π ← `confuse(M)` (K = `confusion_steps` steps from Π = X), then one distinguishment update of the
  Cholesky parameters of M on `minmax_objective`. `through_confusion=False` stops the gradient at Π (alternating);
  True differentiates through the K unrolled confusion steps (bilevel, as the released code differentiates through
  its closed form). Returns the last M (`objective` is J(M) of the closed form, for comparison).

  Args:
    pairs: `f[N, 2, d]` pairs X; y: `[N]` ±1.
    ridge: as `pair_scatter`'s, through `ridge_pairs` appended to X (so J is the trace form on ridged A, B).
    optimizer: the distinguishment optimiser (default `optax.adam(1e-2)`).
    confusion_optimizer: see `confuse`.
  """
  _check_dissimilar_term(dissimilar_term)
  optimizer = optax.adam(1e-2) if optimizer is None else optimizer
  num_pairs = len(pairs)
  if ridge:
    extra_pairs, extra_y = ridge_pairs(np.shape(pairs)[-1], ridge, num_pairs)
    pairs, y = np.concatenate([pairs, extra_pairs]), np.concatenate([y, extra_y])
  with jax.enable_x64(True):
    pairs = jnp.asarray(pairs, jnp.float64)
    y = jnp.asarray(y)
    metric = jnp.eye(pairs.shape[-1], dtype=jnp.float64) if metric_init is None else jnp.asarray(metric_init,
                                                                                               jnp.float64)
    kwargs = dict(alpha=alpha, beta=beta, dissimilar_term=dissimilar_term)

    # Pairs and labels are arguments of the jitted scan, not closed-over constants: XLA would constant-fold the
    # products of large constant arrays at compile time (seconds per product at N = 5000).
    def loss_fn(params, pairs, y):
      m = metric_from_params(params)
      adversarial = confuse(m, pairs, y, beta=beta, steps=confusion_steps, optimizer=confusion_optimizer)
      if not through_confusion:
        adversarial = jax.lax.stop_gradient(adversarial)
      return minmax_objective(m, adversarial, pairs, y, num_pairs=num_pairs, **kwargs)

    @jax.jit
    def run(params, pairs, y):
      def step(carry, _):
        params, opt_state = carry
        value, grads = jax.value_and_grad(loss_fn)(params, pairs, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

      return jax.lax.scan(step, (params, optimizer.init(params)), length=steps)

    (params, _), history = run(cholesky_params(metric), pairs, y)
    metric = metric_from_params(params)
    a, b = pair_scatter(pairs[:, 0] - pairs[:, 1], y)
    final = float(objective(metric, a, b, num_pairs, **kwargs))
    info = {"solver": "minmax", "history": np.asarray(history), "through_confusion": through_confusion,
            "confusion_steps": confusion_steps}
    return LinearAMLResult(np.asarray(metric), final, info)


SOLVERS = ("backtracking", "minmax")


def fit(features: np.ndarray, labels: np.ndarray, *, num_pairs: int = 2000, seed: int = 0, alpha: float = 10.0,
        beta: float = 1.0, dissimilar_term: str = "official", ridge: float = 0.0, solver: str = "backtracking",
        **solver_kwargs) -> LinearAMLResult:
  """Linear AML on `features` `[n, d]` with class `labels` `[n]`: random pairs (`sample_pairs`), then a solver.

  Args:
    solver: "backtracking" (`fit_backtracking`, the released solver; default) or "minmax" (`fit_minmax`).
    **solver_kwargs: passed to the solver.
  """
  if solver not in SOLVERS:
    raise ValueError(f"unknown solver {solver!r}; valid: {', '.join(SOLVERS)}")
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) != len(labels):
    raise ValueError(f"features must be [n, d] with n = len(labels) = {len(labels)}, got shape {features.shape}")
  first, second, y = sample_pairs(labels, num_pairs, seed)
  with jax.enable_x64(True):
    differences = jnp.asarray(features[first] - features[second])
    a, b = pair_scatter(differences, jnp.asarray(y), ridge=ridge)
    if solver == "backtracking":
      return fit_backtracking(a, b, num_pairs, alpha=alpha, beta=beta, dissimilar_term=dissimilar_term,
                              **solver_kwargs)
  pairs = np.stack([features[first], features[second]], axis=1)
  return fit_minmax(pairs, y, alpha=alpha, beta=beta, dissimilar_term=dissimilar_term, ridge=ridge, **solver_kwargs)
