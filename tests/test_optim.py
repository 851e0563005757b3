"""Tests for metriclearn.optim against torch.optim semantics: coupled L2 Adam, AdamW, SGD, StepLR, warm-up freezing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch

from metriclearn import optim
from metriclearn.models import create_model

# Two modules with a quadratic loss whose gradients are large enough for clipping by value to bite.
# The torch comparisons run in float64 (`x64` below) so that they test the algorithm to 1e-9, not float32 round-off
# (which alone differs by ~1e-6 after a few Adam steps).
_SHAPES = {"backbone": {"conv": {"kernel": (3, 2)}, "bn": {"scale": (2,), "bias": (2,)}},
           "head": {"out": {"kernel": (2, 3), "bias": (3,)}}}


def _params(seed: int = 0) -> dict:
  leaves, treedef = jax.tree.flatten(_SHAPES, is_leaf=lambda x: isinstance(x, tuple))
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [jax.random.normal(k, s) for k, s in zip(keys, leaves)])


def _targets() -> dict:
  return jax.tree.map(lambda p: jnp.full_like(p, 3.0), _params())


def _loss(params: dict) -> jax.Array:
  # Different curvature per leaf so that the moments differ between parameters.
  return sum(0.5 * (i + 1) * jnp.sum(jnp.square(p - t))
             for i, (p, t) in enumerate(zip(jax.tree.leaves(params), jax.tree.leaves(_targets()))))


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _run_jax(config: dict, steps: int) -> tuple[list[dict], list]:
  params = _params()
  tx = optim.create_optimizer(config, params)
  state = tx.init(params)
  update = jax.jit(tx.update)
  trajectory, states = [], []
  for _ in range(steps):
    updates, state = update(jax.grad(_loss)(params), state, params)
    params = optax.apply_updates(params, updates)
    trajectory.append(params)
    states.append(state)
  return trajectory, states


def _torch_params() -> dict[str, torch.nn.Parameter]:
  paths = jax.tree.leaves(optim.param_paths(_params()))
  return {path: torch.nn.Parameter(torch.tensor(np.asarray(leaf)))
          for path, leaf in zip(paths, jax.tree.leaves(_params()))}


def _torch_loss(tparams: dict) -> torch.Tensor:
  return sum(0.5 * (i + 1) * torch.sum((p - t) ** 2)
             for i, (p, t) in enumerate(zip(tparams.values(), (torch.tensor(np.asarray(t))
                                                               for t in jax.tree.leaves(_targets())))))


def _run_torch(make_optimizer, steps: int, *, clip_value=None, clip_norm=None, warmup_steps=0,
               scheduler=None) -> list[dict]:
  """torch's reference loop; during the warm-up backbone parameters get no gradient, as with requires_grad=False."""
  tparams = _torch_params()
  optimizer = make_optimizer(tparams)
  lr_scheduler = scheduler(optimizer) if scheduler else None
  trajectory = []
  for step in range(steps):
    optimizer.zero_grad(set_to_none=True)
    _torch_loss(tparams).backward()
    if step < warmup_steps:
      for path, p in tparams.items():
        if not path.startswith("head"):
          p.grad = None
    with_grad = [p for p in tparams.values() if p.grad is not None]
    if clip_value:
      torch.nn.utils.clip_grad_value_(with_grad, clip_value)
    if clip_norm:
      torch.nn.utils.clip_grad_norm_(with_grad, clip_norm)
    optimizer.step()
    if lr_scheduler:
      lr_scheduler.step()
    trajectory.append({path: p.detach().numpy().copy() for path, p in tparams.items()})
  return trajectory


def _assert_trajectories_close(jax_trajectory, torch_trajectory, atol=1e-9):
  assert len(jax_trajectory) == len(torch_trajectory)
  for step, (jax_params, torch_params) in enumerate(zip(jax_trajectory, torch_trajectory)):
    paths = jax.tree.leaves(optim.param_paths(jax_params))
    for path, leaf in zip(paths, jax.tree.leaves(jax_params)):
      np.testing.assert_allclose(leaf, torch_params[path], rtol=0, atol=atol, err_msg=f"step {step}, {path}")


def test_coupled_l2_adam_with_clipping_equals_torch_adam(x64):
  config = {"name": "adam", "learning_rate": 0.05, "weight_decay": 0.01, "clip_value": 2.0}
  jax_trajectory, _ = _run_jax(config, steps=8)
  torch_trajectory = _run_torch(lambda p: torch.optim.Adam(p.values(), lr=0.05, weight_decay=0.01), 8, clip_value=2.0)
  _assert_trajectories_close(jax_trajectory, torch_trajectory)
  # The comparison is not vacuous: decoupled decay gives another trajectory.
  adamw_trajectory, _ = _run_jax({**config, "coupled_weight_decay": False, "weight_decay": 0.5}, steps=8)
  assert not np.allclose(jax.tree.leaves(adamw_trajectory[-1])[0], jax.tree.leaves(jax_trajectory[-1])[0])


def test_adamw_with_multiplier_equals_torch_adamw_param_groups(x64):
  config = {"name": "adamw", "learning_rate": 0.02, "weight_decay": 0.3, "lr_multipliers": {"head": 10.0}}

  def make(tparams):
    head = [p for path, p in tparams.items() if path.startswith("head")]
    rest = [p for path, p in tparams.items() if not path.startswith("head")]
    return torch.optim.AdamW([{"params": rest}, {"params": head, "lr": 0.2}], lr=0.02, weight_decay=0.3)

  jax_trajectory, _ = _run_jax(config, steps=6)
  _assert_trajectories_close(jax_trajectory, _run_torch(make, 6))


def test_sgd_momentum_coupled_l2_and_step_schedule_equal_torch(x64):
  config = {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9, "weight_decay": 0.05, "schedule": "step",
            "decay_steps": 3, "gamma": 0.5, "clip_global_norm": 5.0}
  jax_trajectory, _ = _run_jax(config, steps=9)
  torch_trajectory = _run_torch(
      lambda p: torch.optim.SGD(p.values(), lr=0.01, momentum=0.9, weight_decay=0.05), 9, clip_norm=5.0,
      scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5))
  _assert_trajectories_close(jax_trajectory, torch_trajectory)


@pytest.mark.parametrize("clip", [{"clip_value": 2.0}, {"clip_global_norm": 3.0}])
def test_frozen_warmup_equals_torch_requires_grad_toggle(clip, x64):
  warmup = 3
  config = {"name": "adam", "learning_rate": 0.05, "weight_decay": 0.01, "frozen_warmup_steps": warmup, **clip}
  jax_trajectory, states = _run_jax(config, steps=7)
  initial = _params()

  for step in range(warmup):
    for before, after in zip(jax.tree.leaves(initial["backbone"]), jax.tree.leaves(jax_trajectory[step]["backbone"])):
      np.testing.assert_array_equal(before, after)  # bit-identical
    backbone_moments = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(states[step])
                        if any(getattr(k, "name", None) in ("mu", "nu") for k in path)
                        and any(getattr(k, "key", None) == "backbone" for k in path)]
    assert len(backbone_moments) == 6  # mu and nu of the three backbone leaves
    assert all(float(jnp.abs(m).max()) == 0.0 for m in backbone_moments)
  assert not np.allclose(jax_trajectory[warmup - 1]["head"]["out"]["kernel"], initial["head"]["out"]["kernel"])
  assert not np.allclose(jax_trajectory[warmup]["backbone"]["conv"]["kernel"], initial["backbone"]["conv"]["kernel"])

  torch_trajectory = _run_torch(lambda p: torch.optim.Adam(p.values(), lr=0.05, weight_decay=0.01), 7,
                                clip_value=clip.get("clip_value"), clip_norm=clip.get("clip_global_norm"),
                                warmup_steps=warmup)
  _assert_trajectories_close(jax_trajectory, torch_trajectory)


def test_frozen_pattern_never_updates():
  trajectory, _ = _run_jax({"name": "adam", "learning_rate": 0.1, "frozen": "backbone/bn"}, steps=3)
  np.testing.assert_array_equal(trajectory[-1]["backbone"]["bn"]["scale"], _params()["backbone"]["bn"]["scale"])
  assert not np.allclose(trajectory[-1]["backbone"]["conv"]["kernel"], _params()["backbone"]["conv"]["kernel"])


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_lr_multipliers_scale_matching_paths_only(name):
  params = _params()
  grads = jax.grad(_loss)(params)
  base = {"name": name, "learning_rate": 0.01, "momentum": 0.0}

  def first_update(config):
    tx = optim.create_optimizer(config, params)
    return tx.update(grads, tx.init(params), params)[0]

  plain = first_update(base)
  scaled = first_update({**base, "lr_multipliers": {"head": 10.0, r".*bn/bias": 0.5}})
  paths = optim.param_paths(params)
  factor = {"head/out/kernel": 10.0, "head/out/bias": 10.0, "backbone/bn/bias": 0.5}
  for path, p, s in zip(jax.tree.leaves(paths), jax.tree.leaves(plain), jax.tree.leaves(scaled)):
    np.testing.assert_allclose(s, factor.get(path, 1.0) * p, rtol=1e-6, err_msg=path)


def test_first_matching_multiplier_wins_and_labels_on_a_real_model():
  model = create_model("small_cnn", embedding_dim=8, widths=(8, 16))
  params = model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 1)))["params"]
  labels = optim.param_labels({"lr_multipliers": {"head/out/bias": 2.0, "head": 10.0}, "frozen_warmup_steps": 5},
                              params)
  assert labels["head"]["out"]["bias"] == "always*2.0"
  assert labels["head"]["out"]["kernel"] == "always*10.0"
  assert set(jax.tree.leaves(labels["backbone"])) == {"after_warmup*1.0"}


@pytest.mark.parametrize("name,coupled", [("sgd", True), ("adam", True), ("adamw", False)])
def test_weight_decay_exclusion_mask(name, coupled):
  params = _params()
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  config = {"name": name, "learning_rate": 1.0, "momentum": 0.0, "weight_decay": 0.1,
            "coupled_weight_decay": coupled, "weight_decay_exclude": optim.BIAS_AND_NORM_PATTERN}
  tx = optim.create_optimizer(config, params)
  updates = tx.update(zero_grads, tx.init(params), params)[0]
  for path, p, u in zip(jax.tree.leaves(optim.param_paths(params)), jax.tree.leaves(params), jax.tree.leaves(updates)):
    if path.endswith(("bias", "scale")):
      np.testing.assert_array_equal(u, 0.0, err_msg=path)
    elif name == "adam":  # coupled L2 goes through Adam's normalisation: the step is −lr·sign(θ) on the first step
      np.testing.assert_allclose(u, -jnp.sign(p), rtol=1e-4, err_msg=path)
    else:
      np.testing.assert_allclose(u, -0.1 * p, rtol=1e-6, err_msg=path)
  mask = optim.path_mask(params, optim.BIAS_AND_NORM_PATTERN)
  assert jax.tree.leaves(mask) == [True, True, False, True, False]  # bn bias, bn scale, conv kernel, out bias, kernel


def test_step_schedules_equal_torch_steplr_and_multisteplr():
  steps = 25

  def torch_lrs(make_scheduler):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler, lrs = make_scheduler(optimizer), []
    for _ in range(steps):
      lrs.append(scheduler.get_last_lr()[0])
      optimizer.step()
      scheduler.step()
    return lrs

  period = optim.create_schedule({"learning_rate": 0.1, "schedule": "step", "decay_steps": 7, "gamma": 0.25})
  np.testing.assert_allclose([period(t) for t in range(steps)],
                             torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 7, gamma=0.25)), rtol=1e-6)
  boundaries = optim.create_schedule({"learning_rate": 0.1, "schedule": "step", "boundaries": (5, 12), "gamma": 0.5})
  np.testing.assert_allclose([boundaries(t) for t in range(steps)],
                             torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [5, 12], gamma=0.5)),
                             rtol=1e-6)
  cosine = optim.create_schedule({"learning_rate": 0.1, "schedule": "cosine", "decay_steps": 20})
  np.testing.assert_allclose([cosine(t) for t in range(21)],
                             torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20))[:21],
                             rtol=1e-5, atol=1e-7)


def test_cosine_with_linear_warmup():
  schedule = optim.create_schedule({"learning_rate": 0.2, "schedule": "cosine", "decay_steps": 110,
                                    "warmup_cosine_steps": 10})
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(60), schedule(110)],
                             [0.0, 0.1, 0.2, 0.1, 0.0], atol=1e-6)


def test_schedule_counts_global_steps_through_the_warmup():
  # SGD without momentum, gradient 1 everywhere: the update of a held-back parameter at step t is −lr(t).
  params = {"backbone": jnp.zeros(1), "head": jnp.zeros(1)}
  tx = optim.create_optimizer({"name": "sgd", "momentum": 0.0, "learning_rate": 1.0, "schedule": "step",
                               "boundaries": (2,), "gamma": 0.1, "frozen_warmup_steps": 2}, params)
  state = tx.init(params)
  backbone_updates = []
  for _ in range(4):
    updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    backbone_updates.append(float(updates["backbone"][0]))
  np.testing.assert_allclose(backbone_updates, [0.0, 0.0, -0.1, -0.1], rtol=1e-6)


def test_config_dict_input_and_errors():
  config = optim.default_config()
  config.learning_rate = 0.5
  config.lr_multipliers = ((".*bias$", 3.0), ("head", 2.0))  # a regex with a dot: not possible as a ConfigDict key
  assert isinstance(config, ml_collections.ConfigDict)
  labels = optim.param_labels(config, _params())
  assert (labels["head"]["out"]["bias"], labels["head"]["out"]["kernel"]) == ("always*3.0", "always*2.0")
  assert labels["backbone"]["conv"]["kernel"] == "always*1.0"
  assert isinstance(optim.create_optimizer(config, _params()), optax.GradientTransformation)
  with pytest.raises(ValueError, match="pairs"):
    optim.create_optimizer({"lr_multipliers": ("head", 2.0)}, _params())

  with pytest.raises(ValueError, match="adam, adamw, sgd"):
    optim.create_optimizer({"name": "lamb"}, _params())
  with pytest.raises(ValueError, match="constant, step, cosine"):
    optim.create_optimizer({"schedule": "linear"}, _params())
  with pytest.raises(ValueError, match="valid keys"):
    optim.create_optimizer({"learning_rte": 0.1}, _params())
  with pytest.raises(ValueError, match="matches no parameter.*backbone.*head"):
    optim.create_optimizer({"lr_multipliers": {"embedding": 10.0}}, _params())
  with pytest.raises(ValueError, match="trainable_during_warmup"):
    optim.create_optimizer({"frozen_warmup_steps": 3, "trainable_during_warmup": "neck"}, _params())
  with pytest.raises(ValueError, match="decay_steps"):
    optim.create_optimizer({"schedule": "cosine"}, _params())
  with pytest.raises(ValueError, match="not a valid regular expression"):
    optim.create_optimizer({"weight_decay": 0.1, "weight_decay_exclude": "(bias"}, _params())
