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

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn as tnn
from torch.nn import functional as F

from metriclearn import models
from metriclearn.models import weights

TOLERANCE = 1e-4
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


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
    scale = IMAGENET_STD / 0.5
    x = x * scale + (IMAGENET_MEAN - 0.5) / 0.5
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
  rgb = (x * IMAGENET_STD + IMAGENET_MEAN) * 255.0
  return rgb.flip(1) - torch.tensor([104.0, 117.0, 128.0]).view(1, 3, 1, 1)


# --- fixtures -----------------------------------------------------------------------------------------------------

REFERENCES = {"resnet50": TorchResNet50, "googlenet": TorchGoogLeNet, "bninception": TorchBNInception}
INPUT_TRANSFORMS = {"bninception": caffe_input}


@functools.cache
def reference(arch: str):
  """A torch reference with random weights, in eval mode: (model, input NCHW, float32 output, float64 output)."""
  torch.manual_seed(0)
  model = REFERENCES[arch]()
  x = torch.randn(2, 3, 64, 64)
  torch_input = INPUT_TRANSFORMS.get(arch, lambda t: t)(x)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, tnn.Conv2d):
        tnn.init.kaiming_normal_(module.weight, nonlinearity="relu")  # variance-preserving, as torchvision's
      if isinstance(module, tnn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.1)
        module.reset_running_stats()
        module.momentum = None  # a cumulative average: after one batch, the running statistics are that batch's
    model.train()
    model(torch_input)  # calibrates the statistics, so that activations stay O(1) through the network
    model.eval()
    out32 = model(torch_input)
    out64 = copy.deepcopy(model).double()(torch_input.double())
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
def test_forward_matches_torch_float64(arch, tmp_path):
  # In float64 both sides compute the same function to ~1e-12, so anything above the tolerance is a layout error
  # (a wrong padding, pooling, epsilon or weight transposition); float32 is the next test.
  _, _, _, expected = reference(arch)
  with jax.enable_x64(True):
    variables, x = flax_variables(arch, tmp_path, jnp.float64)
    module = models.MODELS[arch](dtype=jnp.float64)
    maps = np.asarray(jax.jit(functools.partial(module.apply, train=False))(variables, x))
  assert maps.dtype == np.float64
  assert maps.shape == nhwc(expected).shape == (2, 2, 2, 2048 if arch == "resnet50" else 1024)
  assert 0.3 < maps.std() < 3.0  # calibrated: the tolerance is not trivially met by tiny activations
  np.testing.assert_allclose(maps, nhwc(expected), rtol=0, atol=TOLERANCE)
  np.testing.assert_allclose(models.pool(maps, "gap"), expected.mean(dim=(2, 3)).numpy(), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("arch", ["resnet50", "bninception", "googlenet"])
def test_float32_forward_and_frozen_batchnorm(arch, tmp_path):
  _, _, out32, out64 = reference(arch)
  variables, x = flax_variables(arch, tmp_path)
  module, frozen = models.MODELS[arch](), models.MODELS[arch](freeze_bn=True)

  @jax.jit
  def forward(variables, x):
    maps = module.apply(variables, x, train=False)
    # Frozen BatchNorm: training mode uses (and keeps) the running statistics, so it computes the evaluation output.
    frozen_maps, updates = frozen.apply(variables, x, train=True, mutable=["batch_stats"])
    return maps, frozen_maps, updates["batch_stats"]

  maps, frozen_maps, stats = forward(variables, x)
  # float32 rounding grows through 50 random layers: torch's own float32 output is ~1e-4..1e-3 from float64. Flax in
  # float32 must be as accurate as torch in float32, and close to it.
  torch_error = np.abs(nhwc(out32).astype(np.float64) - nhwc(out64)).max()
  flax_error = np.abs(np.asarray(maps, np.float64) - nhwc(out64)).max()
  assert flax_error <= 2 * torch_error + 1e-5, (flax_error, torch_error)
  np.testing.assert_allclose(np.asarray(maps), nhwc(out32), rtol=0, atol=4 * torch_error + 1e-5)
  np.testing.assert_allclose(np.asarray(models.pool(maps, "gap")), out32.mean(dim=(2, 3)).numpy(), rtol=0,
                             atol=4 * torch_error + 1e-5)
  jax.tree.map(np.testing.assert_array_equal, stats, variables["batch_stats"])
  np.testing.assert_allclose(np.asarray(frozen_maps), np.asarray(maps), rtol=0, atol=1e-5)


def test_unfrozen_batchnorm_updates_statistics_like_torch(tmp_path):
  # ResNet-50 in training mode: batch statistics, and torch's running-average update (momentum 0.1 = flax's 0.9).
  variables, x = flax_variables("resnet50", tmp_path)
  module = models.MODELS["resnet50"]()
  out, updates = jax.jit(functools.partial(module.apply, train=True, mutable=["batch_stats"]))(variables, x)
  model_torch = copy.deepcopy(reference("resnet50")[0])
  x_torch = reference("resnet50")[1]
  bn = model_torch.layer4[2].bn3
  old_var = bn.running_var.clone()
  for m in model_torch.modules():
    if isinstance(m, tnn.BatchNorm2d):
      m.momentum = 0.1
  model_torch.train()
  with torch.no_grad():
    expected = model_torch(x_torch)
  np.testing.assert_allclose(np.asarray(out), nhwc(expected), rtol=0, atol=5e-3)
  # Departure (documented in layers.batch_norm): flax averages the biased batch variance, torch the unbiased one
  # (× n / (n − 1), n = B·h·w = 8 here, thousands in real training).
  n = 2 * 2 * 2
  flax_var = 0.9 * old_var + (bn.running_var - 0.9 * old_var) * (n - 1) / n
  new_var = updates["batch_stats"]["layer4"]["2"]["bn3"]["var"]
  np.testing.assert_allclose(np.asarray(new_var), flax_var.numpy(), rtol=1e-3, atol=1e-5)
  assert not np.allclose(new_var, variables["batch_stats"]["layer4"]["2"]["bn3"]["var"])
