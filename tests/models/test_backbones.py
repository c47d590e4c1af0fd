"""Both backbone families' layouts: depths, widths, where the expert split is, and dispatch from the
config. That every layout's experts are the same function in every form is test_expert_split.py."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import pytest

from hyperlt import configs as config_lib
from hyperlt.models.expert_model import build
from hyperlt.models import imagenet_resnet
from hyperlt.models.imagenet_resnet import ImageNetResNet
from hyperlt.models.resnet import CifarResNet

TINY = 1 / 16        # widths / 16: stem 4 channels, ResNeXt groups 2
SHALLOW = (1, 1, 1, 1)  # one block per stage where a test computes; full depth is checked by tracing


def _images(batch: int = 2, size: int = 16) -> jnp.ndarray:
  return jax.random.normal(jax.random.PRNGKey(0), (batch, size, size, 3))


def test_resnet32_split_without_compiling():
  """ResNet-32 with SADE's split: stage 1 shared, stages 2-3 per expert, 64 features."""
  net = CifarResNet(num_experts=3)
  variables = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), _images(size=32), train=False))
  assert len(variables["params"]["trunk"]["Stages_0"]) == 5
  assert len(variables["params"]["branches"]["Stages_0"]) == 5 + 5
  kernel = variables["params"]["branches"]["Stages_0"]["BasicBlock_0"]["Conv_0"]["kernel"]
  assert kernel.shape == (3, 3, 3, 16, 32)          # [experts, 3, 3, in, out]: stage 2 opens the branch
  out = jax.eval_shape(lambda v: net.apply(v, _images(size=32), train=False), variables)
  assert out.shape == (3, 2, net.feature_dim) and net.feature_dim == 64


def test_no_branch_stages_shares_every_feature():
  net = ImageNetResNet(num_experts=3, architecture="resnet50", branch_stages=0, width_multiplier=TINY)
  variables = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(1), _images(), train=False))
  assert "branches" not in variables["params"]
  out = jax.eval_shape(lambda v: net.apply(v, _images(), train=False), variables)
  assert out.shape == (3, 2, net.feature_dim)


def test_published_widths_and_splits():
  # Full-size feature dims: ResNet-50 / ResNeXt-50 end in 2048 channels; SADE's reduce_dimension (0.75
  # on the branch stages) gives 1536.
  assert ImageNetResNet(3, "resnet50").feature_dim == 2048
  assert ImageNetResNet(3, "resnext50_32x4d", branch_width=0.75).feature_dim == 1536
  specs = imagenet_resnet.stage_specs(imagenet_resnet.ARCHITECTURES["resnext50_32x4d"], 2, 1.0, 0.75)
  assert [s.inner for s in specs] == [128, 256, 384, 768]     # 32 groups x 4 (x 3/4 on the branches)
  assert [s.planes * 4 for s in specs] == [256, 512, 768, 1536]
  assert all(s.inner % s.groups == 0 for s in specs)
  assert imagenet_resnet.PUBLISHED_BRANCH_STAGES == {"resnext50_32x4d": 2, "resnet50": 2, "resnet152": 1}


def test_full_depth_structure_without_compiling():
  net = ImageNetResNet(num_experts=3, architecture="resnext50_32x4d", branch_stages=2, width_multiplier=TINY)
  variables = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), _images(), train=False))
  assert len(variables["params"]["trunk"]["Stages_0"]) == 3 + 4
  assert len(variables["params"]["branches"]["Stages_0"]) == 6 + 3
  # The 3x3 convolution is grouped: each group sees inner / groups input channels.
  spec = net.specs[2]
  grouped = variables["params"]["branches"]["Stages_0"]["Bottleneck_0"]["Conv_1"]["kernel"]
  assert spec.groups > 1 and grouped.shape == (3, 3, 3, spec.inner // spec.groups, spec.inner)


def test_resnet152_shapes_without_compiling():
  net = ImageNetResNet(num_experts=2, architecture="resnet152", branch_stages=1, width_multiplier=TINY)
  variables = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), _images(), train=False))
  trunk_blocks = [k for k in variables["params"]["trunk"]["Stages_0"] if k.startswith("Bottleneck")]
  branch_blocks = [k for k in variables["params"]["branches"]["Stages_0"] if k.startswith("Bottleneck")]
  assert len(trunk_blocks) == 3 + 8 + 36 and len(branch_blocks) == 3
  out = jax.eval_shape(lambda v: net.apply(v, _images(), train=False), variables)
  assert out.shape == (2, 2, net.feature_dim)


def test_config_dispatch_builds_a_trainable_expert_model():
  config = config_lib.load("digits")
  config_lib.override(config, ["model.backbone=resnet50", f"model.width_multiplier={TINY}",
                               "model.branch_width=0.75"])
  config_lib.validate(config)
  model = build(config.model, num_classes=5)
  assert isinstance(model.backbone, ImageNetResNet) and model.backbone.architecture == "resnet50"
  assert model.feature_dim == round(512 * TINY * 0.75) * 4
  model = dataclasses.replace(model, backbone=model.backbone.clone(stage_sizes=SHALLOW))
  params, batch_stats = jax.jit(model.init, static_argnums=1)(jax.random.PRNGKey(0), (16, 16, 3))

  @jax.jit
  def forward(params, batch_stats, images):
    feats, new_stats = model.features(params, batch_stats, images, train=True)
    return model.logits(params, feats, jnp.eye(3)), new_stats

  logits, new_stats = forward(params, batch_stats, _images(4))
  chex.assert_shape(logits, (3, 4, 5))
  chex.assert_tree_all_finite(logits)
  # Training mode updates every expert's own batch statistics.
  chex.assert_trees_all_equal_shapes(new_stats, batch_stats)
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new_stats["backbone"]["branches"],
                       batch_stats["backbone"]["branches"])
  assert all(jax.tree.leaves(moved))


def test_config_rejects_bad_backbone_fields():
  config = config_lib.load("digits")
  config_lib.override(config, ["model.backbone=resnet51"])
  with pytest.raises(config_lib.UserInputError, match="model.backbone"):
    config_lib.validate(config)
  config = config_lib.load("digits")
  config_lib.override(config, ["model.backbone=resnet50", "model.branch_stages=4"])
  with pytest.raises(config_lib.UserInputError, match="model.branch_stages"):
    config_lib.validate(config)


@pytest.mark.parametrize("architecture,branch_stages,per_expert_planes", [
    ("resnext50_32x4d", 2, (192, 384)),   # ImageNet-LT: stages 3-4 per expert, both reduced
    ("resnet50", 2, (192, 384)),          # iNaturalist 2018
    ("resnet152", 1, (384,)),             # Places-LT (share_layer3): stage 3 shared yet reduced
])
def test_published_expert_splits(architecture, branch_stages, per_expert_planes):
  net = ImageNetResNet(num_experts=3, architecture=architecture, branch_stages=branch_stages, branch_width=0.75)
  planes = [spec.planes for spec in net.specs]
  assert planes == [64, 128, 192, 384]          # SADE's reduce_dimension: 192 / 384 planes
  assert tuple(planes[4 - branch_stages:]) == per_expert_planes
  assert net.feature_dim == 1536
  variables = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), _images(), train=False))
  branch_kernel = variables["params"]["branches"]["Stages_0"]["Bottleneck_0"]["Conv_0"]["kernel"]
  assert branch_kernel.shape[0] == 3                                  # stacked over the experts
  assert branch_kernel.shape[-1] == net.specs[4 - branch_stages].inner
