"""CIFAR-style ResNets (ResNet-32 and smaller) with SADE's expert split.

The network is ``stem -> stage_1 -> ... -> stage_S -> global average pool``. The first
``S - branch_stages`` stages (and the stem) form the shared trunk; the last ``branch_stages`` stages are
each expert's own. This module defines the blocks, the stages and where the split is; the experts
themselves (stacked variables, vmapped or unrolled, shared features when ``branch_stages = 0``) are
:mod:`hyperlt.models.expert_split`. Every convolution is built by :func:`hyperlt.models.conv.make_conv`
(``conv``: how its gradient is computed; the parameters are the same either way).

ResNet-32 is ``stage_sizes=(5, 5, 5)``, ``widths=(16, 32, 64)`` with the parameter-free "option A"
shortcut (strided subsampling plus zero channel padding) of He et al. (2016), as in SADE and LDAM-DRW.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from hyperlt.models import conv as conv_lib
from hyperlt.models.expert_split import ExpertSplit, ModuleFactory

Dtype = Any


def _batch_norm(train: bool, dtype: Dtype) -> nn.BatchNorm:
  # PyTorch's BatchNorm2d defaults (momentum 0.1 there is 0.9 here), as in the published recipes.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with an option-A identity shortcut."""

  features: int
  strides: int = 1
  dtype: Dtype = jnp.float32
  conv: str = "xla"  # formulation of the convolutions (hyperlt.models.conv.IMPLS); parameters do not depend on it

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    conv = functools.partial(conv_lib.make_conv(self.conv), kernel_size=(3, 3), use_bias=False, dtype=self.dtype,
                             kernel_init=nn.initializers.kaiming_normal())
    y = conv(self.features, strides=(self.strides, self.strides))(x)
    y = nn.relu(_batch_norm(train, self.dtype)(y))
    y = conv(self.features)(y)
    y = _batch_norm(train, self.dtype)(y)
    shortcut = x
    if self.strides > 1:
      shortcut = shortcut[:, ::self.strides, ::self.strides, :]
    extra = self.features - shortcut.shape[-1]
    if extra > 0:
      shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    return nn.relu(y + shortcut)


class Stages(nn.Module):
  """Consecutive residual stages; every stage after the network's first halves the resolution."""

  stage_sizes: Sequence[int]
  widths: Sequence[int]
  first_stage_index: int
  dtype: Dtype = jnp.float32
  conv: str = "xla"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    for offset, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for b in range(blocks):
        first_of_downsampling_stage = b == 0 and (self.first_stage_index + offset) > 0
        x = BasicBlock(width, strides=2 if first_of_downsampling_stage else 1, dtype=self.dtype,
                       conv=self.conv)(x, train)
    return x


class Trunk(nn.Module):
  """Stem and the shared stages."""

  stage_sizes: Sequence[int]
  widths: Sequence[int]
  dtype: Dtype = jnp.float32
  conv: str = "xla"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = conv_lib.make_conv(self.conv)(self.widths[0], (3, 3), use_bias=False, dtype=self.dtype,
                                      kernel_init=nn.initializers.kaiming_normal())(x.astype(self.dtype))
    x = nn.relu(_batch_norm(train, self.dtype)(x))
    return Stages(self.stage_sizes, self.widths, first_stage_index=0, dtype=self.dtype, conv=self.conv)(x, train)


class CifarResNet(ExpertSplit):
  """ResNet-32-style network with SADE's split: the last ``branch_stages`` stages are per expert."""

  stage_sizes: Sequence[int] = (5, 5, 5)
  widths: Sequence[int] = (16, 32, 64)
  branch_stages: int = 2
  dtype: Dtype = jnp.float32
  # How every convolution is formulated (hyperlt.models.conv: "xla" or "chunked"); the same parameters.
  conv: str = "xla"

  @property
  def feature_dim(self) -> int:
    return self.widths[-1]

  @property
  def num_shared(self) -> int:
    return len(self.stage_sizes) - self.branch_stages

  def trunk_factory(self) -> ModuleFactory:
    n = self.num_shared
    return functools.partial(Trunk, self.stage_sizes[:n], self.widths[:n], dtype=self.dtype, conv=self.conv)

  def stages_factory(self) -> ModuleFactory | None:
    if not self.branch_stages:
      return None
    n = self.num_shared
    return functools.partial(Stages, self.stage_sizes[n:], self.widths[n:], first_stage_index=n, dtype=self.dtype,
                             conv=self.conv)
