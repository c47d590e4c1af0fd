"""SADE's expert split, written once for every backbone: a shared trunk, then T expert branches.

A backbone maps images [B, H, W, C] to features [T, B, d] as

    images --trunk (stem, shared stages)--> h --branch_t (expert t's stages, global average pool)--> f_t

The T branches are ONE module, ``branches``, whose parameters and batch statistics carry a leading expert
axis (every leaf of ``params["branches"]`` is [T, ...]); the trunk's live under ``trunk``. A backbone
subclasses :class:`ExpertSplit` and supplies only two module factories (``trunk_factory`` and
``stages_factory``); everything about the experts lives here. Factories rather than modules, because Flax
names a module after the module that builds it: built here, they keep the names every checkpoint has
(``trunk/...``, ``branches/Stages_0/...``).

The variables are one layout, evaluated in one of several forms, each the same function of them (same
features, same updated batch statistics, same gradients), so a checkpoint does not record the form:

* ``vmap``: :func:`flax.linen.vmap` over the stacked branch variables, one wide computation. XLA lowers a
  convolution vmapped over its kernels to a grouped convolution: the form for GPU/TPU. With
  ``model.conv=chunked`` (:mod:`hyperlt.models.conv`) the convolutions alone are split back into T
  ordinary ones, while batch normalisation and activations stay one wide operation.
* ``unrolled``: the stacked variables sliced and applied expert by expert at trace time, so one compiled
  program holds T ordinary convolutions. XLA:CPU runs grouped convolutions about 15x slower than T plain
  ones (one 3x3 layer's gradient at T=3, batch 128, 16x16x32: 2.0 s vmapped vs 0.13 s unrolled on 2 CPU
  cores; docs/performance.md), so this is the form for CPU. In the whole ResNet-32 step on 2 cores, with
  chunked convolutions, it took 0.87x the time of ``vmap`` (``benchmarks/bench_conv.py step``).
* ``map``: :func:`jax.lax.map` over the stacked variables: one expert's branch compiled once and run T
  times in a loop (program size independent of T). On XLA:CPU the whole step took 4.3x the time of
  ``unrolled`` (both with chunked convolutions); it is there to be timed where compile time or program
  size matters.

With no branch stages (``stages_factory() is None``) the experts share every feature: the trunk's pooled
features are broadcast T times, in every form, and the experts differ only in their heads.

``FORMS`` names the forms so that a caller can pick one by name (``model.experts``) or time each
(:func:`hyperlt.models.timing.time_forms`).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Variables = Any  # {"params": ..., "batch_stats": ...}
# Builds a fresh module. Called inside a compact method the module becomes that method's child (named by
# ``name=`` or after its class); called with ``parent=None`` it is free-standing.
ModuleFactory = Callable[..., nn.Module]


def _global_average_pool(x: jnp.ndarray) -> jnp.ndarray:
  return jnp.mean(x, axis=(1, 2))


class Branch(nn.Module):
  """One expert's private stages, then global average pooling: [B, H, W, C] -> [B, d]."""

  stages: ModuleFactory

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    # Built here, the stages are this module's child, named after their class ("Stages_0").
    return _global_average_pool(self.stages()(x, train))


class ExpertSplit(nn.Module):
  """Shared trunk plus ``num_experts`` stacked branches: images [B, H, W, C] -> features [T, B, d].

  Calling the module is the ``vmap`` form; ``init`` declares the variables every form reads. Features
  are float32 whatever the compute dtype, because the cosine heads normalise them.
  """

  num_experts: int

  def trunk_factory(self) -> ModuleFactory:
    """The stem and shared stages: images [B, H, W, C] -> feature map [B, H', W', C']."""
    raise NotImplementedError

  def stages_factory(self) -> ModuleFactory | None:
    """One expert's private stages (feature map -> feature map), or None when every stage is shared."""
    raise NotImplementedError

  def parts(self) -> tuple[nn.Module, Branch | None]:
    """Free-standing (trunk, one expert's branch), for applying the stacked branches by hand; the branch
    is None without branch stages."""
    stages = self.stages_factory()
    # parent=None: not children of this module, which may be unbound or bound to another scope.
    return self.trunk_factory()(parent=None), None if stages is None else Branch(stages, parent=None)

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool) -> jnp.ndarray:
    h = self.trunk_factory()(name="trunk")(images, train)
    stages = self.stages_factory()
    if stages is None:
      pooled = _global_average_pool(h).astype(jnp.float32)
      return jnp.broadcast_to(pooled, (self.num_experts,) + pooled.shape)
    stacked = nn.vmap(Branch, variable_axes={"params": 0, "batch_stats": 0}, split_rngs={"params": True},
                      in_axes=(None, None), axis_size=self.num_experts)
    return stacked(stages, name="branches")(h, train).astype(jnp.float32)


def _apply(module: nn.Module, variables: Variables, x: jnp.ndarray, train: bool) -> tuple[jnp.ndarray, Any]:
  """``module`` on ``x`` and its batch statistics: updated in training, passed through otherwise."""
  if train:
    out, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
    return out, updates["batch_stats"]
  return module.apply(variables, x, train=False), variables["batch_stats"]


def vmapped(split: ExpertSplit, variables: Variables, images: jnp.ndarray, train: bool) -> tuple[jnp.ndarray, Any]:
  """The ``vmap`` form: the module's own call."""
  return _apply(split, variables, images, train)


def unrolled(split: ExpertSplit, variables: Variables, images: jnp.ndarray, train: bool) -> tuple[jnp.ndarray, Any]:
  """The ``unrolled`` form: expert t's branch applied to slice t of the stacked variables, t = 1..T.

  The Python loop runs at trace time, so the compiled program is one; gradients reach the stacked
  parameters through the slices, and the updated statistics are stacked back into the same layout.
  """
  trunk, branch = split.parts()
  if branch is None:  # shared features: nothing to unroll
    return vmapped(split, variables, images, train)
  params, stats = variables["params"], variables["batch_stats"]
  h, trunk_stats = _apply(trunk, {"params": params["trunk"], "batch_stats": stats["trunk"]}, images, train)
  stacked = {"params": params["branches"], "batch_stats": stats["branches"]}
  outputs = [_apply(branch, jax.tree.map(lambda leaf, t=t: leaf[t], stacked), h, train)
             for t in range(split.num_experts)]
  features = jnp.stack([f for f, _ in outputs]).astype(jnp.float32)
  if not train:
    return features, stats
  branch_stats = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(s for _, s in outputs))
  return features, {"trunk": trunk_stats, "branches": branch_stats}


def mapped(split: ExpertSplit, variables: Variables, images: jnp.ndarray, train: bool) -> tuple[jnp.ndarray, Any]:
  """The ``map`` form: :func:`jax.lax.map` over the stacked branch variables, a compiled loop whose body is
  one expert's branch (ordinary convolutions, like ``unrolled``, but traced and compiled once whatever T,
  and run one expert at a time, like a scan)."""
  trunk, branch = split.parts()
  if branch is None:
    return vmapped(split, variables, images, train)
  params, stats = variables["params"], variables["batch_stats"]
  h, trunk_stats = _apply(trunk, {"params": params["trunk"], "batch_stats": stats["trunk"]}, images, train)
  stacked = {"params": params["branches"], "batch_stats": stats["branches"]}
  features, branch_stats = jax.lax.map(lambda v: _apply(branch, v, h, train), stacked)
  if not train:
    return features.astype(jnp.float32), stats
  return features.astype(jnp.float32), {"trunk": trunk_stats, "branches": branch_stats}


FORMS: dict[str, Callable[[ExpertSplit, Variables, jnp.ndarray, bool], tuple[jnp.ndarray, Any]]] = {
    "vmap": vmapped,
    "unrolled": unrolled,
    "map": mapped,
}


def resolve(mode: str) -> str:
  """The form for ``model.experts``: a form's name, or "auto" = unrolled on CPU (where grouped
  convolutions are slow, see the module docstring) and vmap elsewhere."""
  if mode == "auto":
    return "unrolled" if jax.default_backend() == "cpu" else "vmap"
  if mode not in FORMS:
    raise ValueError(f"expert form: expected 'auto' or one of {tuple(FORMS)}, got {mode!r}")
  return mode


def features(split: ExpertSplit, variables: Variables, images: jnp.ndarray, train: bool,
             form: str = "vmap") -> tuple[jnp.ndarray, Any]:
  """Features [T, B, d] of images [B, H, W, C] in the named form, and the batch statistics (updated when
  ``train``; the ones passed in otherwise)."""
  return FORMS[form](split, variables, images, train)
