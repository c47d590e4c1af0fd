"""The expert model as pure functions over a parameter pytree.

Every use of the model (training, evaluation, sweeps, adaptation, prediction) is the same path:

    images --backbone--> features [T, B, d]              (independent of the preference)
    r_hat [P, T] --heads--> W [P, T, d, K]              (hypernetwork, or fixed per-expert matrices)
    (features, W, r_hat) --combine--> logits [P, B, K]

Parameters are ``{"backbone": ..., "heads": ..., "log_scale": [T]}``; batch statistics are
``{"backbone": ...}``. The model object holds only static structure (module definitions and sizes), so
its methods can be closed over by ``jax.jit`` without ever being traced.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from hyperlt import preference
from hyperlt.models import conv
from hyperlt.models import expert_split
from hyperlt.models import heads
from hyperlt.models import hypernet
from hyperlt.models.imagenet_resnet import ARCHITECTURES, ImageNetResNet
from hyperlt.models.resnet import CifarResNet

BACKBONES = ("resnet_cifar",) + tuple(ARCHITECTURES)

Params = Any


@dataclasses.dataclass(frozen=True)
class ExpertModel:
  """T experts on a shared trunk, with preference-generated (or fixed) cosine heads."""

  backbone: expert_split.ExpertSplit  # CifarResNet or ImageNetResNet
  num_classes: int
  head: str = "hyper"
  hyper_hidden: tuple[int, ...] = (128, 128, 128)
  scale: float = 30.0
  combine: str = "weighted"
  posthoc_tau: float = 0.0
  experts: str = "vmap"  # a form of hyperlt.models.expert_split.FORMS

  @property
  def num_experts(self) -> int:
    return self.backbone.num_experts

  @property
  def feature_dim(self) -> int:
    return self.backbone.feature_dim

  @property
  def hypernetwork(self) -> hypernet.HyperNetwork:
    return hypernet.HyperNetwork(self.num_experts, self.feature_dim, self.num_classes, tuple(self.hyper_hidden))

  def init(self, key: jax.Array, image_shape: tuple[int, int, int]) -> tuple[Params, Params]:
    """(params, batch_stats) for images of shape [H, W, C]."""
    backbone_key, head_key = jax.random.split(key)
    variables = self.backbone.init(backbone_key, jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False)
    if self.head == "hyper":
      head_params = hypernet.init(head_key, self.hypernetwork)
    else:
      shape = (self.num_experts, self.feature_dim, self.num_classes)
      head_params = {"weights": jax.random.normal(head_key, shape, jnp.float32)}
    params = {"backbone": variables["params"], "heads": head_params,
              "log_scale": jnp.zeros((self.num_experts,), jnp.float32)}
    return params, {"backbone": variables.get("batch_stats", {})}

  def features(self, params: Params, batch_stats: Params, images: jnp.ndarray,
               train: bool) -> tuple[jnp.ndarray, Params]:
    """Features [T, B, d] of normalised images [B, H, W, C], and the updated batch statistics; the
    experts are evaluated in the form ``experts`` names (see hyperlt.models.expert_split)."""
    variables = {"params": params["backbone"], "batch_stats": batch_stats["backbone"]}
    feats, stats = expert_split.features(self.backbone, variables, images, train, self.experts)
    return feats, {"backbone": stats}

  def r_hat(self, params: Params, alpha: jnp.ndarray) -> jnp.ndarray:
    """Effective preferences [P, T] from raw preferences alpha [P, T] (see hyperlt.preference)."""
    return preference.effective(params["log_scale"], alpha)

  def head_weights(self, params: Params, r_hat: jnp.ndarray) -> jnp.ndarray:
    """Head matrices [P, T, d, K]; fixed heads are broadcast over the preference axis."""
    if self.head == "hyper":
      return hypernet.apply(params["heads"], self.hypernetwork, r_hat)
    weights = params["heads"]["weights"]
    return jnp.broadcast_to(weights, (r_hat.shape[0],) + weights.shape)

  def logits(self, params: Params, features: jnp.ndarray, r_hat: jnp.ndarray) -> jnp.ndarray:
    """Combined logits [P, B, K] for features [T, B, d] and effective preferences r_hat [P, T]."""
    return heads.combined_logits(features, self.head_weights(params, r_hat), r_hat, self.scale, self.combine)

  def prediction_shift(self, prior) -> jnp.ndarray | None:
    """The shift [K] added to logits before predicting: ``-posthoc_tau * log pi`` (post-hoc logit
    adjustment with the TRAINING prior pi), or None when ``posthoc_tau`` is 0."""
    if not self.posthoc_tau:
      return None
    return -self.posthoc_tau * jnp.log(jnp.asarray(prior, jnp.float32))

  def expert_logits(self, params: Params, features: jnp.ndarray, r_hat: jnp.ndarray) -> jnp.ndarray:
    """Per-expert logits [P, T, B, K] (for diagnostics and diversity losses)."""
    return heads.expert_logits(features, self.head_weights(params, r_hat), self.scale)


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> ExpertModel:
  """The model described by a validated ``config.model`` section; ``model.backbone`` picks the trunk."""
  dtype = jnp.bfloat16 if model_config.dtype == "bfloat16" else jnp.float32
  conv_mode = model_config.conv
  if model_config.backbone == "resnet_cifar":
    backbone = CifarResNet(
        num_experts=model_config.num_experts,
        stage_sizes=tuple(model_config.stage_sizes),
        widths=tuple(model_config.widths),
        branch_stages=model_config.branch_stages,
        dtype=dtype,
        conv=conv.resolve(conv_mode),
    )
  else:
    backbone = ImageNetResNet(
        num_experts=model_config.num_experts,
        architecture=model_config.backbone,
        branch_stages=model_config.branch_stages,
        width_multiplier=model_config.width_multiplier,
        branch_width=model_config.branch_width,
        dtype=dtype,
        # "auto" is measured for the CIFAR network only: the ImageNet-style ones keep XLA's own gradient.
        conv="xla" if conv_mode == "auto" else conv.resolve(conv_mode),
    )
  return ExpertModel(backbone=backbone, num_classes=num_classes, head=model_config.head,
                     hyper_hidden=tuple(model_config.hyper_hidden), scale=model_config.scale,
                     combine=model_config.combine, posthoc_tau=model_config.posthoc_tau,
                     experts=expert_split.resolve(model_config.experts))

