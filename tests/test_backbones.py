"""ImageNet backbones against PyTorch references, and the pretrained-weight import (`metriclearn.models.weights`).

torchvision and pretrainedmodels are not installed, so the references are written here from torch.nn modules in their
layouts (torchvision's ResNet-50 v1.5 and GoogLeNet with its auxiliary heads, Cadene's BN-Inception), with random
weights and BatchNorm statistics calibrated on a batch so that activations stay O(1) through 50 layers. Each state
dict goes through a `.pth` file and `weights.read_state_dict` / `from_state_dict` into the flax trees.
"""

from __future__ import annotations

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
  """(torch model in eval mode with random weights and calibrated statistics, input NCHW, its output NCHW)."""
  torch.manual_seed(0)
  model = REFERENCES[arch]()
  x = torch.randn(2, 3, 64, 64)
  torch_input = INPUT_TRANSFORMS.get(arch, lambda t: t)(x)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, tnn.Conv2d):
        # Variance-preserving (as torchvision's init), so that BatchNorm does not amplify rounding differences.
        tnn.init.kaiming_normal_(module.weight, nonlinearity="relu")
      if isinstance(module, tnn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.1)
        module.reset_running_stats()
        module.momentum = None  # a cumulative average: after one batch, the running statistics are that batch's
    model.train()
    model(torch_input)
    model.eval()
    for module in model.modules():
      if isinstance(module, tnn.BatchNorm2d):
        # A variance from 8 values (2 images × 2×2 maps in the last stage) can be tiny for a channel and would
        # amplify float32 rounding; a floor keeps every channel's gain moderate, as in a network trained on data.
        module.running_var.clamp_(min=0.5 * float(module.running_var.mean()))
    out = model(torch_input)
  return model, x, out


def flax_variables(arch: str, tmp_path, **kwargs):
  model_torch, x, _ = reference(arch)
  path = os.path.join(tmp_path, f"{arch}.pth")
  torch.save(model_torch.state_dict(), path)
  module = models.MODELS[arch](**kwargs)
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  params, batch_stats = weights.from_state_dict(weights.read_state_dict(path, arch), shapes["params"],
                                                shapes["batch_stats"], arch=arch, source=path)
  return module, {"params": params, "batch_stats": batch_stats}, jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


# --- parity with torch ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["resnet50", "bninception", "googlenet"])
def test_forward_matches_torch(arch, tmp_path):
  module, variables, x = flax_variables(arch, tmp_path)
  maps = jax.jit(functools.partial(module.apply, train=False))(variables, x)
  _, _, expected = reference(arch)
  expected_maps = expected.numpy().transpose(0, 2, 3, 1)
  assert maps.shape == expected_maps.shape == (2, 2, 2, 2048 if arch == "resnet50" else 1024)
  assert 0.1 < float(jnp.std(maps)) < 10.0  # calibrated: differences below the tolerance are not trivially small
  np.testing.assert_allclose(np.asarray(maps), expected_maps, rtol=0, atol=TOLERANCE)
  pooled = models.pool(maps, "gap")
  np.testing.assert_allclose(np.asarray(pooled), expected.mean(dim=(2, 3)).numpy(), rtol=0, atol=TOLERANCE)

  # Frozen BatchNorm: training mode uses (and keeps) the running statistics, so it computes the evaluation output.
  frozen = models.MODELS[arch](freeze_bn=True)
  out, updates = jax.jit(functools.partial(frozen.apply, train=True, mutable=["batch_stats"]))(variables, x)
  jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], variables["batch_stats"])
  np.testing.assert_allclose(np.asarray(out), np.asarray(maps), rtol=0, atol=1e-5)


def test_unfrozen_batchnorm_updates_statistics_like_torch(tmp_path):
  # ResNet-50 in training mode: batch statistics, and torch's running-average update (momentum 0.1 = flax's 0.9).
  module, variables, x = flax_variables("resnet50", tmp_path)
  out, updates = jax.jit(functools.partial(module.apply, train=True, mutable=["batch_stats"]))(variables, x)
  model_torch, x_torch, _ = reference("resnet50")
  bn = model_torch.layer4[2].bn3
  old_var = bn.running_var.clone()
  state = {k: v.clone() for k, v in model_torch.state_dict().items()}
  try:
    for m in model_torch.modules():
      if isinstance(m, tnn.BatchNorm2d):
        m.momentum = 0.1
    model_torch.train()
    with torch.no_grad():
      expected = model_torch(x_torch)
    torch_var = bn.running_var.clone()
  finally:
    model_torch.load_state_dict(state)
    model_torch.eval()
  np.testing.assert_allclose(np.asarray(out), expected.numpy().transpose(0, 2, 3, 1), rtol=0, atol=1e-3)
  # Departure (layers.batch_norm): flax averages the biased batch variance, torch the unbiased one (× n / (n − 1),
  # n = B·h·w = 8 here, ≥ 1,500 in real training).
  n = 2 * 2 * 2
  flax_var = 0.9 * old_var + (torch_var - 0.9 * old_var) * (n - 1) / n
  new_var = updates["batch_stats"]["layer4"]["2"]["bn3"]["var"]
  np.testing.assert_allclose(np.asarray(new_var), flax_var.numpy(), rtol=1e-4, atol=1e-5)
  assert not np.allclose(new_var, variables["batch_stats"]["layer4"]["2"]["bn3"]["var"])
