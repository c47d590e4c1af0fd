"""ImageNet-style bottleneck ResNets (ResNet-50, ResNet-152, ResNeXt-50 32x4d) with expert branches.

The network is ``stem (7x7/2 conv, 3x3/2 max-pool) -> stage_1 .. stage_4 -> global average pool``, each
stage a run of bottleneck blocks ``1x1 -> 3x3 (grouped, strided) -> 1x1 (x4 channels)`` with a projected
shortcut where the shape changes (the stride sits on the 3x3 convolution, as in torchvision's v1.5).
As in :mod:`hyperlt.models.resnet`, the first ``4 - branch_stages`` stages form the shared trunk and the
last ``branch_stages`` are each expert's own; :mod:`hyperlt.models.expert_split` stacks them over the
experts, so ``images [B, H, W, C] -> features [T, B, d]``.

Published expert splits (SADE / RIDE; set ``model.branch_stages`` and ``model.branch_width``).
``branch_width`` is SADE's ``reduce_dimension``: it scales stages 3 and 4 whether they are per expert
or shared, so on Places-LT the shared stage 3 has 192 planes and each expert's stage 4 has 384:

==================  ==================  ==============  ============================================
architecture        dataset             branch_stages   branch_width
==================  ==================  ==============  ============================================
resnext50_32x4d     ImageNet-LT         2 (stages 3-4)  0.75 (SADE's reduce_dimension: 192/384 planes)
resnet50            iNaturalist 2018    2 (stages 3-4)  0.75
resnet152           Places-LT           1 (stage 4)     0.75 (SADE's share_layer3: stage 3 shared)
==================  ==================  ==============  ============================================

``width_multiplier`` scales every width (and the group count) and ``stage_sizes`` replaces the block
counts, both for small test models; the defaults (1.0 and the architecture's counts) are the published
network.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from hyperlt.models import conv as conv_lib
from hyperlt.models.expert_split import ExpertSplit, ModuleFactory

Dtype = Any
EXPANSION = 4
BASE_PLANES = (64, 128, 256, 512)
REDUCED_FROM_STAGE = 2  # 0-based: stages 3 and 4 are the ones branch_width scales


@dataclasses.dataclass(frozen=True)
class Architecture:
  stage_sizes: tuple[int, ...]
  groups: int = 1
  width_per_group: int = 64


ARCHITECTURES = {
    "resnet50": Architecture((3, 4, 6, 3)),
    "resnext50_32x4d": Architecture((3, 4, 6, 3), groups=32, width_per_group=4),
    "resnet152": Architecture((3, 8, 36, 3)),
}
PUBLISHED_BRANCH_STAGES = {"resnext50_32x4d": 2, "resnet50": 2, "resnet152": 1}


def _batch_norm(train: bool, dtype: Dtype) -> nn.BatchNorm:
  # PyTorch's BatchNorm2d defaults (its momentum 0.1 is Flax's 0.9).
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype)


def _conv(features: int, kernel: int, strides: int = 1, groups: int = 1, dtype: Dtype = jnp.float32,
          impl: str = "xla"):
  pad = kernel // 2
  return conv_lib.make_conv(impl)(features, (kernel, kernel), strides=(strides, strides),
                                  padding=((pad, pad), (pad, pad)), feature_group_count=groups, use_bias=False,
                                  dtype=dtype, kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))


class Bottleneck(nn.Module):
  """``1x1 (inner) -> 3x3 (inner, groups, stride) -> 1x1 (planes * 4)``, plus the shortcut."""

  planes: int
  inner: int
  groups: int
  strides: int = 1
  dtype: Dtype = jnp.float32
  conv: str = "xla"  # formulation of the convolutions (hyperlt.models.conv.IMPLS); parameters do not depend on it

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    out_channels = self.planes * EXPANSION
    conv = functools.partial(_conv, dtype=self.dtype, impl=self.conv)
    y = nn.relu(_batch_norm(train, self.dtype)(conv(self.inner, 1)(x)))
    y = conv(self.inner, 3, self.strides, self.groups)(y)
    y = nn.relu(_batch_norm(train, self.dtype)(y))
    y = _batch_norm(train, self.dtype)(conv(out_channels, 1)(y))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != out_channels:
      shortcut = conv(out_channels, 1, self.strides)(x)
      shortcut = _batch_norm(train, self.dtype)(shortcut)
    return nn.relu(y + shortcut)


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """One stage: its blocks, planes (output = planes * 4), inner width, groups and first stride."""

  blocks: int
  planes: int
  inner: int
  groups: int
  strides: int


class Stages(nn.Module):
  specs: Sequence[StageSpec]
  dtype: Dtype = jnp.float32
  conv: str = "xla"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    for spec in self.specs:
      for b in range(spec.blocks):
        x = Bottleneck(spec.planes, spec.inner, spec.groups, spec.strides if b == 0 else 1,
                       dtype=self.dtype, conv=self.conv)(x, train)
    return x


class Trunk(nn.Module):
  """Stem and the shared stages."""

  stem_width: int
  specs: Sequence[StageSpec]
  dtype: Dtype = jnp.float32
  conv: str = "xla"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = _conv(self.stem_width, 7, strides=2, dtype=self.dtype, impl=self.conv)(x.astype(self.dtype))
    x = nn.relu(_batch_norm(train, self.dtype)(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    return Stages(self.specs, dtype=self.dtype, conv=self.conv)(x, train)


def stage_specs(arch: Architecture, branch_stages: int, width_multiplier: float, branch_width: float,
                stage_sizes: Sequence[int] = ()) -> tuple[StageSpec, ...]:
  """The four stages' shapes. Stages 3 and 4 get ``branch_width`` times the planes (SADE's
  reduce_dimension applies to them whether or not they are per expert; ``branch_stages`` only decides
  which stages are per expert).

  Inner (3x3) width is ``planes * groups * width_per_group / 64`` (torchvision's rule), rounded to a
  multiple of the group count; the group count itself scales with ``width_multiplier`` so that reduced
  test models stay valid.
  """
  del branch_stages  # the split decides which stages are per expert, not their widths
  groups = max(1, round(arch.groups * width_multiplier))
  specs = []
  for index, (blocks, base) in enumerate(zip(tuple(stage_sizes) or arch.stage_sizes, BASE_PLANES)):
    factor = width_multiplier * (branch_width if index >= REDUCED_FROM_STAGE else 1.0)
    planes = max(1, round(base * factor))
    inner = planes * arch.groups * arch.width_per_group // 64
    inner = max(groups, (inner // groups) * groups)
    specs.append(StageSpec(blocks, planes, inner, groups, 1 if index == 0 else 2))
  return tuple(specs)


class ImageNetResNet(ExpertSplit):
  """Bottleneck ResNet / ResNeXt with SADE's split: the last ``branch_stages`` of the 4 stages are per expert."""

  architecture: str = "resnext50_32x4d"
  branch_stages: int = 2
  width_multiplier: float = 1.0
  branch_width: float = 1.0
  stage_sizes: Sequence[int] = ()   # empty = the architecture's block counts
  dtype: Dtype = jnp.float32
  # How every convolution is formulated (hyperlt.models.conv); the same parameters either way.
  conv: str = "xla"

  @property
  def specs(self) -> tuple[StageSpec, ...]:
    return stage_specs(ARCHITECTURES[self.architecture], self.branch_stages, self.width_multiplier,
                       self.branch_width, self.stage_sizes)

  @property
  def feature_dim(self) -> int:
    return self.specs[-1].planes * EXPANSION

  @property
  def num_shared(self) -> int:
    return len(self.specs) - self.branch_stages

  def trunk_factory(self) -> ModuleFactory:
    stem_width = max(1, round(64 * self.width_multiplier))
    return functools.partial(Trunk, stem_width, self.specs[:self.num_shared], dtype=self.dtype, conv=self.conv)

  def stages_factory(self) -> ModuleFactory | None:
    if not self.branch_stages:
      return None
    return functools.partial(Stages, self.specs[self.num_shared:], dtype=self.dtype, conv=self.conv)
