"""CIFAR-style ResNets (ResNet-32 and smaller) with SADE's expert split.

The network is ``stem -> stage_1 -> ... -> stage_S -> global average pool``. The first
``S - branch_stages`` stages (and the stem) form the shared trunk; the last ``branch_stages`` stages are
replicated once per expert. The replicas are ONE module whose parameters and batch statistics carry a
leading expert axis, applied with :func:`flax.linen.vmap`, so T experts cost one wide computation, not a
Python loop. ``branch_stages = 0`` shares every feature: the experts then differ only in their heads.

ResNet-32 is ``stage_sizes=(5, 5, 5)``, ``widths=(16, 32, 64)`` with the parameter-free "option A"
shortcut (strided subsampling plus zero channel padding) of He et al. (2016), as in SADE and LDAM-DRW.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def _batch_norm(train: bool, dtype: Dtype) -> nn.BatchNorm:
  # PyTorch's BatchNorm2d defaults (momentum 0.1 there is 0.9 here), as in the published recipes.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with an option-A identity shortcut."""

  features: int
  strides: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    conv = functools.partial(nn.Conv, kernel_size=(3, 3), use_bias=False, dtype=self.dtype,
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

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    for offset, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for b in range(blocks):
        first_of_downsampling_stage = b == 0 and (self.first_stage_index + offset) > 0
        x = BasicBlock(width, strides=2 if first_of_downsampling_stage else 1, dtype=self.dtype)(x, train)
    return x


class Trunk(nn.Module):
  """Stem and the shared stages."""

  stage_sizes: Sequence[int]
  widths: Sequence[int]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = nn.Conv(self.widths[0], (3, 3), use_bias=False, dtype=self.dtype,
                kernel_init=nn.initializers.kaiming_normal())(x.astype(self.dtype))
    x = nn.relu(_batch_norm(train, self.dtype)(x))
    return Stages(self.stage_sizes, self.widths, first_stage_index=0, dtype=self.dtype)(x, train)


class Branch(nn.Module):
  """One expert's private stages followed by global average pooling: [B, H, W, C] -> [B, d]."""

  stage_sizes: Sequence[int]
  widths: Sequence[int]
  first_stage_index: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = Stages(self.stage_sizes, self.widths, self.first_stage_index, dtype=self.dtype)(x, train)
    return jnp.mean(x, axis=(1, 2))


class CifarResNet(nn.Module):
  """Shared trunk plus ``num_experts`` stacked branches: images [B, H, W, C] -> features [T, B, d].

  Features are float32 whatever the compute dtype, because the cosine heads normalise them.
  """

  num_experts: int
  stage_sizes: Sequence[int] = (5, 5, 5)
  widths: Sequence[int] = (16, 32, 64)
  branch_stages: int = 2
  dtype: Dtype = jnp.float32

  @property
  def feature_dim(self) -> int:
    return self.widths[-1]

  def parts(self) -> tuple[nn.Module, nn.Module]:
    """Unbound (trunk, one expert's branch), for applying the stacked branches expert by expert."""
    num_shared = len(self.stage_sizes) - self.branch_stages
    # parent=None: free-standing modules, not children of this (unbound) one.
    return (Trunk(self.stage_sizes[:num_shared], self.widths[:num_shared], dtype=self.dtype, parent=None),
            Branch(self.stage_sizes[num_shared:], self.widths[num_shared:], first_stage_index=num_shared,
                   dtype=self.dtype, parent=None))

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool) -> jnp.ndarray:
    num_shared = len(self.stage_sizes) - self.branch_stages
    h = Trunk(self.stage_sizes[:num_shared], self.widths[:num_shared], dtype=self.dtype,
              name="trunk")(images, train)
    if self.branch_stages == 0:
      pooled = jnp.mean(h, axis=(1, 2)).astype(jnp.float32)
      return jnp.broadcast_to(pooled, (self.num_experts,) + pooled.shape)
    stacked = nn.vmap(
        Branch,
        variable_axes={"params": 0, "batch_stats": 0},
        split_rngs={"params": True},
        in_axes=(None, None),
        axis_size=self.num_experts,
    )
    branches = stacked(self.stage_sizes[num_shared:], self.widths[num_shared:],
                       first_stage_index=num_shared, dtype=self.dtype, name="branches")
    return branches(h, train).astype(jnp.float32)
