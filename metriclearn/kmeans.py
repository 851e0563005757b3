"""k-means (Lloyd's algorithm) for `evaluate.clustering_metrics` at SOP scale (60,502 × 512, K = 11,316).

Each iteration assigns every point to its nearest centroid — argmax over K of ⟨x, c⟩ − ½‖c‖², the same order as
−½‖x − c‖² — and moves each centroid to the mean of its points. The assignment is one float32 GEMM per block of
points (NumPy's BLAS on a CPU, jitted XLA on an accelerator), so the N×K distance matrix never exists at once; the
means are one sparse-by-dense product. The update, initialisation and empty-cluster rule are shared by both backends.

Initialisation: scikit-learn's greedy k-means++ (default; its `KMeans` NMI within 0.005, tests/test_kmeans.py; on
the XLA backend one jitted loop on the device, with JAX's random stream instead of NumPy's) or
faiss's random K distinct points (`init="random"`, as pytorch-metric-learning's `AccuracyCalculator` via faiss's
`Kmeans`). As faiss: a fixed number of iterations (stopping early only when no assignment changes, after which
nothing would), and an empty cluster takes half of a large one: it copies the centroid of the largest cluster not yet
split, and the two are nudged apart by a relative 1/1024 in alternating coordinates. Departure: faiss draws the
cluster to split with probability ∝ its size; here the largest goes first (deterministic, no extra random stream).
"""

from __future__ import annotations

import functools
import os
from concurrent import futures

import jax
import jax.numpy as jnp
import numpy as np
from scipy import sparse

INITS = ("random", "k-means++")
BACKENDS = ("auto", "xla", "numpy")
# Bytes of one block's [points, K] float32 scores (two are in flight); a K of 11,316 gives blocks of ~5,900 points.
DEFAULT_MEMORY_BUDGET = 256 << 20
_SPLIT = 1.0 / 1024  # faiss's EPS for splitting a cluster
DEFAULT_ITERATIONS = 25  # faiss's `Kmeans` default (`niter`), which PML's AccuracyCalculator uses


def kmeans(x, n_clusters: int, *, iterations: int = DEFAULT_ITERATIONS, init: str = "k-means++", seed: int = 0,
           backend: str = "auto", memory_budget: int = DEFAULT_MEMORY_BUDGET) -> tuple[np.ndarray, np.ndarray]:
  """Lloyd's k-means on the rows of `x`; returns `(f32[K, D] centroids, i32[N] assignments)`.

  Args:
    x: `f[N, D]` points (float32 or bf16; computed in float32).
    n_clusters: K, 1 ≤ K ≤ N.
    iterations: Lloyd iterations (assignment + update); the returned assignments are those of the final centroids.
    init: "random" (K distinct points, as faiss) or "k-means++" (greedy D² sampling, Arthur & Vassilvitskii 2007, as
      scikit-learn: K sequential passes over the data, each with 2 + ⌊ln K⌋ candidates, so minutes at K = 11,316).
    seed: seed of the initialisation.
    backend: "auto" (NumPy's BLAS when `jax.default_backend()` is "cpu", else XLA), "numpy" or "xla".
    memory_budget: bytes for one block of point-centroid scores.
  """
  if init not in INITS:
    raise ValueError(f"unknown init {init!r}; valid: {list(INITS)}")
  if backend not in BACKENDS:
    raise ValueError(f"unknown backend {backend!r}; valid backends: {list(BACKENDS)}")
  if not isinstance(iterations, (int, np.integer)) or iterations < 0:
    raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
  if backend == "auto":
    backend = "numpy" if jax.default_backend() == "cpu" else "xla"
  points = np.asarray(x if isinstance(x, np.ndarray) else jnp.asarray(x, jnp.float32), np.float32)
  num_points = points.shape[0]
  if not isinstance(n_clusters, (int, np.integer)) or not 1 <= n_clusters <= num_points:
    raise ValueError(f"n_clusters must be an integer in [1, {num_points}] (the number of embeddings), "
                     f"got {n_clusters!r}")
  rng = np.random.default_rng(seed)
  if init == "random":
    centroids = points[np.sort(rng.choice(num_points, n_clusters, replace=False))].copy()
  elif backend == "numpy":
    centroids = _kmeans_plus_plus(points, n_clusters, rng)
  else:  # the same algorithm on the device (its own random stream), one jitted loop of K steps
    chosen = _kmeans_plus_plus_xla(jnp.asarray(points), jax.random.key(seed), n_clusters=int(n_clusters))
    centroids = points[np.asarray(chosen)].copy()
  block = max(1, min(num_points, memory_budget // (4 * n_clusters)))
  with futures.ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
    if backend == "numpy":
      assign = functools.partial(_assign_numpy, pool=pool)
    else:
      assign = functools.partial(_assign_xla, device_points=jnp.asarray(points))
    assignments = assign(points, centroids, block)
    for _ in range(iterations):
      centroids = _update(points, assignments, centroids)
      new = assign(points, centroids, block)
      if np.array_equal(new, assignments):
        break  # a fixed point: further iterations change nothing
      assignments = new
  return centroids, assignments


def _assign_numpy(points, centroids, block, pool):
  """Nearest centroids by blocked GEMMs of [x, 1]·[c, −½‖c‖²]ᵀ = ⟨x, c⟩ − ½‖c‖² (the bias rides in the GEMM); each
  block's argmax runs on `pool`, split over its threads, while the next block's GEMM runs."""
  num_points = points.shape[0]
  rows_aug = np.empty((min(block, num_points), points.shape[1] + 1), np.float32)
  centroids_aug = np.concatenate([centroids, -0.5 * np.einsum("ij,ij->i", centroids, centroids)[:, None]], axis=1)
  centroids_t = np.ascontiguousarray(centroids_aug.T, np.float32)
  assignments = np.empty(num_points, np.int32)
  buffers = [np.empty((rows_aug.shape[0], centroids.shape[0]), np.float32) for _ in range(2)]
  pending = []
  for number, start in enumerate(range(0, num_points, block)):
    rows = min(block, num_points - start)
    rows_aug[:rows, :-1] = points[start:start + rows]
    rows_aug[:rows, -1] = 1.0
    scores = buffers[number % 2][:rows]
    np.matmul(rows_aug[:rows], centroids_t, out=scores)
    for future in pending:  # the previous block's argmax, which used the other buffer
      future.result()
    pending = [pool.submit(_argmax_rows, scores, a, b, assignments, start) for a, b in _halves(rows, pool)]
  for future in pending:
    future.result()
  return assignments


def _argmax_rows(scores, a, b, out, offset):
  out[offset + a:offset + b] = scores[a:b].argmax(axis=1)


def _halves(rows, pool):
  edges = np.linspace(0, rows, pool._max_workers + 1).astype(int)  # pylint: disable=protected-access
  return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


@functools.partial(jax.jit, static_argnames=("block",))
def _assign_xla_jit(points, centroids, *, block):
  bias = -0.5 * jnp.sum(centroids * centroids, axis=1)
  num_points = points.shape[0]
  padded = jnp.pad(points, ((0, -num_points % block), (0, 0))).reshape(-1, block, points.shape[1])
  nearest = jax.lax.map(lambda rows: jnp.argmax(rows @ centroids.T + bias, axis=1), padded)
  return nearest.reshape(-1)[:num_points].astype(jnp.int32)


def _assign_xla(points, centroids, block, *, device_points):
  del points
  return np.asarray(_assign_xla_jit(device_points, jnp.asarray(centroids), block=block))


def _update(points, assignments, centroids):
  """Means of the clusters; each empty cluster splits the largest cluster not yet split (faiss's rule)."""
  num_clusters = centroids.shape[0]
  counts = np.bincount(assignments, minlength=num_clusters)
  membership = sparse.csr_matrix((np.ones(points.shape[0], np.float32), (assignments, np.arange(points.shape[0]))),
                                 shape=(num_clusters, points.shape[0]))
  sums = np.asarray(membership @ points, np.float64)
  centroids = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centroids).astype(np.float32)
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    sizes = counts.astype(np.float64)
    sign = np.where(np.arange(centroids.shape[1]) % 2 == 0, 1.0, -1.0).astype(np.float32)
    for cluster in empty:  # few, and each split changes the sizes the next one sees
      big = int(np.argmax(sizes))
      centroids[cluster] = centroids[big] * (1 + _SPLIT * sign)
      centroids[big] = centroids[big] * (1 - _SPLIT * sign)
      sizes[cluster] = sizes[big] / 2
      sizes[big] -= sizes[cluster]
  return centroids


def _kmeans_plus_plus(points, n_clusters, rng):
  """Greedy k-means++ (scikit-learn's `kmeans_plusplus`): each next centroid is the best, by the resulting sum of
  squared distances to the nearest centroid, of 2 + ⌊ln K⌋ points drawn with probability ∝ that squared distance."""
  trials = 2 + int(np.log(n_clusters))
  sq_norm = np.einsum("ij,ij->i", points, points).astype(np.float64)
  chosen = [int(rng.integers(points.shape[0]))]
  nearest = np.maximum(sq_norm - 2 * (points @ points[chosen[0]]) + sq_norm[chosen[0]], 0.0)
  potential = nearest.sum()
  for _ in range(1, n_clusters):
    draws = np.searchsorted(np.cumsum(nearest), rng.uniform(size=trials) * potential)
    draws = np.minimum(draws, points.shape[0] - 1)
    distance = np.maximum(sq_norm[None, :] - 2 * (points[draws] @ points.T) + sq_norm[draws, None], 0.0)
    np.minimum(nearest[None, :], distance, out=distance)
    potentials = distance.sum(axis=1)
    best = int(np.argmin(potentials))
    chosen.append(int(draws[best]))
    nearest, potential = distance[best], potentials[best]
  return points[chosen].copy()


@functools.partial(jax.jit, static_argnames=("n_clusters",))
def _kmeans_plus_plus_xla(points, key, *, n_clusters):
  """`_kmeans_plus_plus` as one `lax.fori_loop` on the device; returns the chosen rows `i32[K]`."""
  trials = 2 + int(np.log(n_clusters))
  num_points = points.shape[0]
  sq_norm = jnp.sum(points * points, axis=1)

  def distances_to(rows):
    return jnp.maximum(sq_norm[None, :] - 2 * (points[rows] @ points.T) + sq_norm[rows, None], 0.0)

  first_key, key = jax.random.split(key)
  first = jax.random.randint(first_key, (), 0, num_points)
  nearest = distances_to(first[None])[0]
  chosen = jnp.zeros(n_clusters, jnp.int32).at[0].set(first)

  def step(c, carry):
    chosen, nearest, key = carry
    key, draw_key = jax.random.split(key)
    cumulative = jnp.cumsum(nearest)
    draws = jnp.searchsorted(cumulative, jax.random.uniform(draw_key, (trials,)) * cumulative[-1])
    draws = jnp.minimum(draws, num_points - 1)
    distance = jnp.minimum(nearest[None, :], distances_to(draws))
    best = jnp.argmin(jnp.sum(distance, axis=1))
    return chosen.at[c].set(draws[best]), distance[best], key

  chosen, _, _ = jax.lax.fori_loop(1, n_clusters, step, (chosen, nearest, key))
  return chosen
