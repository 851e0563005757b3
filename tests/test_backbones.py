"""ImageNet backbones against PyTorch references, and the pretrained-weight import (`metriclearn.models.weights`).

torchvision and pretrainedmodels are not installed, so the references are written here from torch.nn modules in their
layouts (torchvision's ResNet-50 v1.5 and GoogLeNet with its auxiliary heads, Cadene's BN-Inception), with random
weights and BatchNorm statistics calibrated on a batch so that activations stay O(1) through 50 layers. Each state
dict goes through a `.pth` file and `weights.read_state_dict` / `from_state_dict` into the flax trees.
"""

from __future__ import annotations

import copy
import functools
import os
import sys

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn as tnn
from torch.nn import functional as F

from metriclearn import models
from metriclearn.models import layers
from metriclearn.models import weights

# float64 on both sides agrees to ~1e-11; 1e-8 still catches a BatchNorm epsilon of 1e-5 instead of 0.
FLOAT64_TOLERANCE = 1e-8
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)


# --- torchvision ResNet-50 (v1.5) -------------------------------------------------------------------------------

class TorchBottleneck(tnn.Module):

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = tnn.BatchNorm2d(planes)
    self.conv2 = tnn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
    self.bn2 = tnn.BatchNorm2d(planes)
    self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = tnn.BatchNorm2d(planes * 4)
    self.downsample = downsample

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchResNet50(tnn.Module):

  def __init__(self):
    super().__init__()
    self.conv1 = tnn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
    self.bn1 = tnn.BatchNorm2d(64)
    self.maxpool = tnn.MaxPool2d(3, stride=2, padding=1)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
      stride = 1 if i == 0 else 2
      downsample = tnn.Sequential(tnn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                  tnn.BatchNorm2d(planes * 4))
      layer = [TorchBottleneck(inplanes, planes, stride, downsample)]
      layer += [TorchBottleneck(planes * 4, planes) for _ in range(blocks - 1)]
      setattr(self, f"layer{i + 1}", tnn.Sequential(*layer))
      inplanes = planes * 4
    self.fc = tnn.Linear(2048, 1000)

  def forward(self, x):
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# --- torchvision GoogLeNet (aux heads present in the state dict, unused) ------------------------------------------

class TorchBasicConv2d(tnn.Module):

  def __init__(self, cin, cout, **kwargs):
    super().__init__()
    self.conv = tnn.Conv2d(cin, cout, bias=False, **kwargs)
    self.bn = tnn.BatchNorm2d(cout, eps=0.001)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


class TorchInception(tnn.Module):

  def __init__(self, cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
    super().__init__()
    self.branch1 = TorchBasicConv2d(cin, ch1x1, kernel_size=1)
    self.branch2 = tnn.Sequential(TorchBasicConv2d(cin, ch3x3red, kernel_size=1),
                                  TorchBasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
    self.branch3 = tnn.Sequential(TorchBasicConv2d(cin, ch5x5red, kernel_size=1),
                                  TorchBasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
    self.branch4 = tnn.Sequential(tnn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                  TorchBasicConv2d(cin, pool_proj, kernel_size=1))

  def forward(self, x):
    return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class TorchInceptionAux(tnn.Module):

  def __init__(self, cin):
    super().__init__()
    self.conv = TorchBasicConv2d(cin, 128, kernel_size=1)
    self.fc1 = tnn.Linear(2048, 1024)
    self.fc2 = tnn.Linear(1024, 1000)


class TorchGoogLeNet(tnn.Module):

  def __init__(self):
    super().__init__()
    self.conv1 = TorchBasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
    self.maxpool1 = tnn.MaxPool2d(3, stride=2, ceil_mode=True)
    self.conv2 = TorchBasicConv2d(64, 64, kernel_size=1)
    self.conv3 = TorchBasicConv2d(64, 192, kernel_size=3, padding=1)
    self.maxpool2 = tnn.MaxPool2d(3, stride=2, ceil_mode=True)
    self.inception3a = TorchInception(192, 64, 96, 128, 16, 32, 32)
    self.inception3b = TorchInception(256, 128, 128, 192, 32, 96, 64)
    self.maxpool3 = tnn.MaxPool2d(3, stride=2, ceil_mode=True)
    self.inception4a = TorchInception(480, 192, 96, 208, 16, 48, 64)
    self.inception4b = TorchInception(512, 160, 112, 224, 24, 64, 64)
    self.inception4c = TorchInception(512, 128, 128, 256, 24, 64, 64)
    self.inception4d = TorchInception(512, 112, 144, 288, 32, 64, 64)
    self.inception4e = TorchInception(528, 256, 160, 320, 32, 128, 128)
    self.maxpool4 = tnn.MaxPool2d(2, stride=2, ceil_mode=True)
    self.inception5a = TorchInception(832, 256, 160, 320, 32, 128, 128)
    self.inception5b = TorchInception(832, 384, 192, 384, 48, 128, 128)
    self.aux1 = TorchInceptionAux(512)
    self.aux2 = TorchInceptionAux(528)
    self.fc = tnn.Linear(1024, 1000)

  def forward(self, x):
    # torchvision's transform_input (on with its pretrained weights).
    x = x * (IMAGENET_STD / 0.5).to(x.dtype) + ((IMAGENET_MEAN - 0.5) / 0.5).to(x.dtype)
    x = self.maxpool1(self.conv1(x))
    x = self.maxpool2(self.conv3(self.conv2(x)))
    x = self.maxpool3(self.inception3b(self.inception3a(x)))
    for name in ("4a", "4b", "4c", "4d", "4e"):
      x = getattr(self, f"inception{name}")(x)
    x = self.maxpool4(x)
    return self.inception5b(self.inception5a(x))


# --- Cadene BN-Inception: flat Caffe names, biased convolutions, BatchNorm(eps=1e-5, momentum=0.9) ----------------

# (name, in, 1x1, 3x3_reduce, 3x3, double_3x3_reduce, double_3x3, pool, pool_proj), transcribed from Cadene's module.
CADENE_BLOCKS = (
    ("3a", 192, 64, 64, 64, 64, 96, "avg", 32),
    ("3b", 256, 64, 64, 96, 64, 96, "avg", 64),
    ("3c", 320, None, 128, 160, 64, 96, "max_s2", None),
    ("4a", 576, 224, 64, 96, 96, 128, "avg", 128),
    ("4b", 576, 192, 96, 128, 96, 128, "avg", 128),
    ("4c", 576, 160, 128, 160, 128, 160, "avg", 128),
    ("4d", 608, 96, 128, 192, 160, 192, "avg", 128),
    ("4e", 608, None, 128, 192, 192, 256, "max_s2", None),
    ("5a", 1056, 352, 192, 320, 160, 224, "avg", 128),
    ("5b", 1024, 352, 192, 320, 192, 224, "max", 128),
)


class TorchBNInception(tnn.Module):

  def __init__(self):
    super().__init__()
    self._add("conv1_7x7_s2", 3, 64, 7, stride=2, padding=3)
    self._add("conv2_3x3_reduce", 64, 64, 1)
    self._add("conv2_3x3", 64, 192, 3, padding=1)
    for name, cin, c1, c3r, c3, cdr, cd, pool, proj in CADENE_BLOCKS:
      p, stride = f"inception_{name}", 2 if pool == "max_s2" else 1
      if c1:
        self._add(f"{p}_1x1", cin, c1, 1)
      self._add(f"{p}_3x3_reduce", cin, c3r, 1)
      self._add(f"{p}_3x3", c3r, c3, 3, stride=stride, padding=1)
      self._add(f"{p}_double_3x3_reduce", cin, cdr, 1)
      self._add(f"{p}_double_3x3_1", cdr, cd, 3, padding=1)
      self._add(f"{p}_double_3x3_2", cd, cd, 3, stride=stride, padding=1)
      if proj:
        self._add(f"{p}_pool_proj", cin, proj, 1)
    self.last_linear = tnn.Linear(1024, 1000)

  def _add(self, name, cin, cout, kernel, stride=1, padding=0):
    setattr(self, name, tnn.Conv2d(cin, cout, kernel, stride=stride, padding=padding))
    setattr(self, f"{name}_bn", tnn.BatchNorm2d(cout, eps=1e-05, momentum=0.9, affine=True))

  def _cbr(self, name, x):
    return F.relu(getattr(self, f"{name}_bn")(getattr(self, name)(x)))

  def forward(self, x):
    x = F.max_pool2d(self._cbr("conv1_7x7_s2", x), 3, stride=2, ceil_mode=True)
    x = self._cbr("conv2_3x3", self._cbr("conv2_3x3_reduce", x))
    x = F.max_pool2d(x, 3, stride=2, ceil_mode=True)
    for name, _, c1, _, _, _, _, pool, proj in CADENE_BLOCKS:
      p = f"inception_{name}"
      out = [self._cbr(f"{p}_1x1", x)] if c1 else []
      out.append(self._cbr(f"{p}_3x3", self._cbr(f"{p}_3x3_reduce", x)))
      y = self._cbr(f"{p}_double_3x3_1", self._cbr(f"{p}_double_3x3_reduce", x))
      out.append(self._cbr(f"{p}_double_3x3_2", y))
      if pool == "avg":
        y = F.avg_pool2d(x, 3, stride=1, padding=1, ceil_mode=True, count_include_pad=True)
      elif pool == "max":
        y = F.max_pool2d(x, 3, stride=1, padding=1, ceil_mode=True)
      else:
        y = F.max_pool2d(x, 3, stride=2, ceil_mode=True)
      out.append(self._cbr(f"{p}_pool_proj", y) if proj else y)
      x = torch.cat(out, 1)
    return x


def caffe_input(x: torch.Tensor) -> torch.Tensor:
  """ImageNet-normalised RGB → Cadene's BGR 0..255 minus (104, 117, 128), as its data transforms do."""
  rgb = (x * IMAGENET_STD.to(x.dtype) + IMAGENET_MEAN.to(x.dtype)) * 255.0
  return rgb.flip(1) - torch.tensor([104.0, 117.0, 128.0], dtype=x.dtype).view(1, 3, 1, 1)


# --- fixtures -----------------------------------------------------------------------------------------------------

REFERENCES = {"resnet50": TorchResNet50, "googlenet": TorchGoogLeNet, "bninception": TorchBNInception}
INPUT_TRANSFORMS = {"bninception": caffe_input}


def calibrate(module: tnn.BatchNorm2d, inputs: tuple[torch.Tensor]) -> None:
  """A forward pre-hook: the running statistics become those of the BatchNorm's input (cheaper than train mode).

  A channel's variance over the few values of a small test batch can be tiny, and dividing by it amplifies float32
  rounding through the network; no channel's variance is set below the layer's mean variance.
  """
  variance = inputs[0].var(dim=(0, 2, 3))
  module.running_mean.copy_(inputs[0].mean(dim=(0, 2, 3)))
  module.running_var.copy_(variance.clamp(min=float(variance.mean())))


@functools.cache
def reference(arch: str):
  """A torch reference with random weights, in eval mode: (model, input NCHW, float32 output, float64 output)."""
  torch.manual_seed(0)
  model = REFERENCES[arch]()
  x = torch.randn(2, 3, 64, 64)
  torch_input = INPUT_TRANSFORMS.get(arch, lambda t: t)(x)
  model.eval()
  hooks = []
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, tnn.Conv2d):
        tnn.init.kaiming_normal_(module.weight, nonlinearity="relu")  # variance-preserving, as torchvision's
      if isinstance(module, tnn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.1)
        hooks.append(module.register_forward_pre_hook(calibrate))
    model(torch_input)  # sets each BatchNorm's statistics to its input's, so that activations stay O(1)
    for hook in hooks:
      hook.remove()
    out32 = model(torch_input)
    out64 = copy.deepcopy(model).double()(INPUT_TRANSFORMS.get(arch, lambda t: t)(x.double()))
  return model, x, out32, out64


def flax_variables(arch: str, tmp_path, dtype=jnp.float32):
  """The reference's state dict through a `.pth` file into flax trees of `dtype`; and the input, NHWC."""
  model_torch, x, _, _ = reference(arch)
  path = os.path.join(tmp_path, f"{arch}.pth")
  torch.save(model_torch.state_dict(), path)
  shapes = jax.eval_shape(models.MODELS[arch]().init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  shapes = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, dtype), shapes)
  params, batch_stats = weights.from_state_dict(weights.read_state_dict(path, arch), shapes["params"],
                                                shapes["batch_stats"], arch=arch, source=path)
  return {"params": params, "batch_stats": batch_stats}, jnp.asarray(x.numpy().transpose(0, 2, 3, 1), dtype)


def nhwc(t: torch.Tensor) -> np.ndarray:
  return t.numpy().transpose(0, 2, 3, 1)


# --- parity with torch ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["resnet50", "bninception", "googlenet"])
def test_forward_matches_torch_float64_and_frozen_batchnorm(arch, tmp_path):
  # In float64 both sides compute the same function to ~1e-12, so anything above the tolerance is a layout error
  # (a wrong padding, pooling, epsilon or weight transposition); float32 is the next test.
  _, _, _, expected = reference(arch)
  with jax.enable_x64(True):
    variables, x = flax_variables(arch, tmp_path, jnp.float64)
    module = models.MODELS[arch](dtype=jnp.float64)
    frozen = models.MODELS[arch](freeze_bn=True, dtype=jnp.float64)

    @jax.jit
    def forward(variables, x):
      maps = module.apply(variables, x, train=False)
      # Frozen BatchNorm: training mode uses (and keeps) the running statistics: it computes the evaluation output.
      frozen_maps, updates = frozen.apply(variables, x, train=True, mutable=["batch_stats"])
      return maps, frozen_maps, updates["batch_stats"]

    maps, frozen_maps, stats = jax.tree.map(np.asarray, forward(variables, x))
    stats_before = jax.tree.map(np.asarray, variables["batch_stats"])
  assert maps.dtype == np.float64
  assert maps.shape == nhwc(expected).shape == (2, 2, 2, 2048 if arch == "resnet50" else 1024)
  assert 0.3 < maps.std() < 10.0  # calibrated: the tolerance is not trivially met by tiny activations
  np.testing.assert_allclose(maps, nhwc(expected), rtol=0, atol=FLOAT64_TOLERANCE)
  pooled = maps.mean(axis=(1, 2))  # the embedder's "gap" pooling, in float64 (outside the x64 context jnp is 32-bit)
  np.testing.assert_allclose(pooled, expected.mean(dim=(2, 3)).numpy(), rtol=0, atol=FLOAT64_TOLERANCE)
  jax.tree.map(np.testing.assert_array_equal, stats, stats_before)
  np.testing.assert_allclose(frozen_maps, maps, rtol=0, atol=1e-10)


@pytest.mark.parametrize("arch", ["resnet50", "bninception", "googlenet"])
def test_float32_forward_is_as_accurate_as_torch(arch, tmp_path):
  # float32 rounding grows through 50 random layers: torch's own float32 output is ~1e-4..1e-3 from float64. Flax in
  # float32 must be as accurate as torch in float32, and close to it.
  _, _, out32, out64 = reference(arch)
  variables, x = flax_variables(arch, tmp_path)
  maps = jax.jit(functools.partial(models.MODELS[arch]().apply, train=False))(variables, x)
  assert maps.dtype == jnp.float32
  torch_error = np.abs(nhwc(out32).astype(np.float64) - nhwc(out64)).max()
  flax_error = np.abs(np.asarray(maps, np.float64) - nhwc(out64)).max()
  assert flax_error <= 2 * torch_error + 1e-5, (flax_error, torch_error)
  np.testing.assert_allclose(np.asarray(maps), nhwc(out32), rtol=0, atol=4 * torch_error + 1e-5)
  np.testing.assert_allclose(np.asarray(models.pool(maps, "gap")), out32.mean(dim=(2, 3)).numpy(), rtol=0,
                             atol=4 * torch_error + 1e-5)


@pytest.mark.parametrize("torch_momentum", [0.1, 0.9])
def test_batchnorm_in_training_matches_torch(torch_momentum):
  # The training-mode BatchNorm every backbone uses (`layers.batch_norm`): batch statistics, and a running-average
  # update with flax momentum = 1 − torch momentum (0.1 is torch's default, 0.9 Cadene's BN-Inception's).
  rng = np.random.default_rng(0)
  x = rng.normal(2.0, 3.0, (4, 3, 3, 5)).astype(np.float32)
  bn_torch = tnn.BatchNorm2d(5, momentum=torch_momentum)
  with torch.no_grad():
    bn_torch.weight.uniform_(0.5, 1.5)
    bn_torch.bias.normal_()
    bn_torch.running_mean.normal_()
    bn_torch.running_var.uniform_(0.5, 1.5)
  _, variables = flax_from_torch_bn(bn_torch)
  bn_torch.train()
  with torch.no_grad():
    expected = bn_torch(torch.from_numpy(x.transpose(0, 3, 1, 2)))

  class Wrapper(flax_nn.Module):

    @flax_nn.compact
    def __call__(self, x, train):
      return layers.batch_norm(train=train, freeze_bn=False, momentum=1 - torch_momentum, name="bn")(x)

  out, updates = Wrapper().apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(np.asarray(out), nhwc(expected), rtol=0, atol=1e-5)
  stats = updates["batch_stats"]["bn"]
  np.testing.assert_allclose(stats["mean"], bn_torch.running_mean.numpy(), rtol=1e-5, atol=1e-6)
  # Departure (see layers.batch_norm): flax averages the biased batch variance, torch the unbiased one; they differ
  # by n / (n − 1) with n = B·h·w values per channel (36 here, thousands in real training).
  n = 4 * 3 * 3
  old_var = variables["batch_stats"]["bn"]["var"]
  biased_part = (bn_torch.running_var.numpy() - (1 - torch_momentum) * old_var) * (n - 1) / n
  np.testing.assert_allclose(stats["var"], (1 - torch_momentum) * old_var + biased_part, rtol=1e-5, atol=1e-6)


def flax_from_torch_bn(bn_torch: tnn.BatchNorm2d):
  state_dict = {f"bn.{key}": value.numpy() for key, value in bn_torch.state_dict().items()}
  shapes = {"params": {"bn": {"scale": jax.ShapeDtypeStruct((5,), jnp.float32),
                              "bias": jax.ShapeDtypeStruct((5,), jnp.float32)}},
            "batch_stats": {"bn": {"mean": jax.ShapeDtypeStruct((5,), jnp.float32),
                                   "var": jax.ShapeDtypeStruct((5,), jnp.float32)}}}
  params, batch_stats = weights.from_state_dict(state_dict, shapes["params"], shapes["batch_stats"], arch="bn")
  return state_dict, {"params": params, "batch_stats": batch_stats}


# --- weight files ---------------------------------------------------------------------------------------------------

def random_variables(arch: str, seed: int, size: int = 64, **kwargs) -> dict:
  """Variables of `arch` (a backbone, or an embedder with `embedding_dim`) filled with random values, no compile."""
  module = models.create_model(arch, **kwargs) if kwargs else models.MODELS[arch]()
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
  leaves, treedef = jax.tree.flatten(shapes)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(treedef, [rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype) for leaf in leaves])


@functools.cache
def resnet18_state_dict() -> dict[str, np.ndarray]:
  variables = random_variables("resnet18", seed=1)
  return weights.to_state_dict(variables["params"], variables["batch_stats"])


def test_npz_file_into_an_embedder_replaces_the_backbone_only(tmp_path):
  variables = random_variables("resnet18", seed=0, size=32, embedding_dim=8)
  params, batch_stats = variables["params"], variables["batch_stats"]
  path = os.path.join(tmp_path, "resnet18.npz")
  np.savez(path, **resnet18_state_dict(), **{"fc.weight": np.zeros((1000, 512)), "fc.bias": np.zeros(1000)})
  new_params, new_stats = weights.load_pretrained(params, batch_stats, path, "resnet18")
  assert weights.to_state_dict(new_params["backbone"], new_stats["backbone"]).keys() == resnet18_state_dict().keys()
  jax.tree.map(np.testing.assert_array_equal, weights.to_state_dict(new_params["backbone"], new_stats["backbone"]),
               resnet18_state_dict())
  np.testing.assert_array_equal(new_params["backbone"]["conv1"]["kernel"],
                                resnet18_state_dict()["conv1.weight"].transpose(2, 3, 1, 0))
  jax.tree.map(np.testing.assert_array_equal, new_params["head"], params["head"])
  assert not np.array_equal(new_params["backbone"]["conv1"]["kernel"], params["backbone"]["conv1"]["kernel"])
  assert jax.tree.map(lambda a: (a.shape, a.dtype), new_params) == jax.tree.map(lambda a: (a.shape, a.dtype), params)


def test_pth_file_with_wrapper_and_dataparallel_prefix_converted_to_npz(tmp_path):
  path = os.path.join(tmp_path, "checkpoint.pth")
  wrapped = {f"module.{key}": torch.from_numpy(value) for key, value in resnet18_state_dict().items()}
  wrapped["module.bn1.num_batches_tracked"] = torch.tensor(7)
  torch.save({"state_dict": wrapped, "epoch": 3}, path)
  converted = os.path.join(tmp_path, "converted.npz")
  weights.convert_to_npz(path, converted)
  state_dict = weights.read_state_dict(converted, "resnet18")
  assert set(state_dict) == set(resnet18_state_dict()) | {"bn1.num_batches_tracked"}
  variables = random_variables("resnet18", seed=0)
  params, _ = weights.from_state_dict(state_dict, variables["params"], variables["batch_stats"], arch="resnet18")
  np.testing.assert_array_equal(params["layer1"]["0"]["conv1"]["kernel"],
                                resnet18_state_dict()["layer1.0.conv1.weight"].transpose(2, 3, 1, 0))


def test_safetensors_file(tmp_path):
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top (a dev extra)
  path = os.path.join(tmp_path, "model.safetensors")
  save_file(resnet18_state_dict(), path)
  jax.tree.map(np.testing.assert_array_equal, weights.read_state_dict(path, "resnet18"), resnet18_state_dict())


def test_safetensors_without_the_package_says_what_to_install(tmp_path, monkeypatch):
  path = os.path.join(tmp_path, "model.safetensors")
  open(path, "wb").close()
  monkeypatch.setitem(sys.modules, "safetensors.numpy", None)  # as if not installed
  with pytest.raises(ImportError, match="pip install safetensors"):
    weights.read_state_dict(path, "resnet18")


def test_linear_layers_are_transposed_like_torch():
  linear = tnn.Linear(4, 3)
  state_dict = {f"dense0.{key}": value.detach().numpy() for key, value in linear.state_dict().items()}
  module = flax_nn.Dense(3, name="dense0")
  shapes = {"dense0": jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 4)))["params"]}
  params, _ = weights.from_state_dict(state_dict, shapes, {}, arch="linear")
  x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
  out = module.apply({"params": params["dense0"]}, x)
  np.testing.assert_allclose(np.asarray(out), linear(torch.from_numpy(x)).detach().numpy(), rtol=1e-6, atol=1e-6)


def test_missing_file_says_what_to_download(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"resnet50-0676ba61\.pth.*config\.model\.pretrained"):
    weights.read_state_dict(os.path.join(tmp_path, "nothing.pth"), "resnet50")
  path = os.path.join(tmp_path, "weights.h5")
  open(path, "wb").close()
  with pytest.raises(ValueError, match=r"unknown weight file type '\.h5'.*\.npz"):
    weights.read_state_dict(path, "resnet50")


def test_a_file_of_another_architecture_is_named():
  variables = random_variables("resnet34", seed=0)
  resnet34 = weights.to_state_dict(variables["params"], variables["batch_stats"])
  target = random_variables("resnet50", seed=0)
  with pytest.raises(ValueError) as error:
    weights.from_state_dict(resnet34, target["params"], target["batch_stats"], arch="resnet50", source="r34.pth")
  message = str(error.value)
  assert message.startswith("r34.pth does not fit resnet50: it holds a resnet34 state dict")
  assert "layer1.0.conv1.weight is [64, 64, 3, 3] in the file, expected [64, 64, 1, 1]" in message
  assert "key(s) missing: " in message and "layer1.0.conv3.weight" in message
  assert "Is it the right architecture? resnet50 takes torchvision's ResNet50_Weights" in message


def test_missing_and_unexpected_keys_are_listed_but_classifier_keys_are_skipped():
  variables = random_variables("resnet18", seed=0)
  state_dict = dict(resnet18_state_dict())
  state_dict.update({"fc.weight": np.zeros((10, 512)), "fc.bias": np.zeros(10), "aux1.fc1.weight": np.zeros((2, 2)),
                     "bn1.num_batches_tracked": np.array(3)})
  weights.from_state_dict(state_dict, variables["params"], variables["batch_stats"], arch="resnet18")  # no error
  del state_dict["bn1.running_var"]
  state_dict["layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1))
  with pytest.raises(ValueError, match=r"1 key\(s\) missing: bn1\.running_var; 1 unexpected key\(s\): "
                                       r"layer5\.0\.conv1\.weight"):
    weights.from_state_dict(state_dict, variables["params"], variables["batch_stats"], arch="resnet18")


@pytest.mark.parametrize("arch,shape,match", [
    ("resnet50", (1, 3, 64, 64), r"RGB images \[B, H, W, 3\]"),
    ("googlenet", (1, 16, 16, 3), "at least 32×32"),
    ("bninception", (1, 72, 72, 3), "even input size"),
])
def test_bad_image_shapes(arch, shape, match):
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(models.MODELS[arch]().init, jax.random.key(0), jnp.zeros(shape))
