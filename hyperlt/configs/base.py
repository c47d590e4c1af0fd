"""The default configuration every recipe starts from; each field is documented where it is set."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.source = "digits"        # "digits" (embedded), "npz", or "tfds:<name>" (e.g. tfds:cifar100)
  c.data.path = ""                # .npz file for source "npz"
  c.data.data_dir = ""            # TFDS data_dir holding a prepared dataset
  c.data.manual_dir = ""          # TFDS manual_dir holding the downloaded archive
  c.data.download = False         # let TFDS download and prepare
  c.data.imbalance_ratio = 100.0  # n_c = floor(n_max * IR^(-c/(K-1)))
  c.data.n_max = 0                # images of the head class; 0 = the smallest class count of the source
  c.data.subset_seed = 0          # seed of the long-tailed selection (METHOD.md: 0)
  c.data.val_fraction = 0.0       # stratified share of the long-tailed set held out for validation
  c.data.test_seed = 0            # seed of the test-agnostic test-set selection
  c.data.mean = ()                # per-channel normalisation; empty = computed from the training set
  c.data.std = ()
  c.data.crop_padding = 4         # random crop with this zero padding (0 disables)
  c.data.flip = True              # random horizontal flip
  c.data.many_above = 100         # shot groups: many > 100, medium 20..100, few < 20 training images
  c.data.few_below = 20

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet_cifar"
  c.model.stage_sizes = (5, 5, 5)  # ResNet-32
  c.model.widths = (16, 32, 64)
  c.model.branch_stages = 2        # SADE split: stages 2-3 per expert; 0 = all features shared
  c.model.num_experts = 3
  c.model.head = "hyper"           # "hyper": heads from the hypernetwork; "static": fixed per-expert heads
  c.model.hyper_hidden = (128, 128, 128)
  c.model.scale = 30.0             # cosine-classifier scale s
  c.model.combine = "weighted"     # z = sum_j r_hat_j v_j; "mean" = the published code's mean of v_j
  c.model.dtype = "float32"        # compute dtype of the backbone ("bfloat16" for mixed precision)

  c.loss = ml_collections.ConfigDict()
  c.loss.mode = "continuous"       # or "paper": sample i always gets anchor loss i
  c.loss.anchors = ("forward", "uniform", "backward")
  c.loss.tau = 2.0                 # backward anchor strength (2 for CIFAR-100-LT/ImageNet-LT, 1 otherwise)
  c.loss.objective = "stch"        # "stch", "stch_code" (published formula) or "sum"
  c.loss.mu = 0.3                  # STCH temperature: 0.3 for CIFAR IR 100/50, 0.1 otherwise

  c.preference = ml_collections.ConfigDict()
  c.preference.sampling = "vertex_dirichlet"  # "symmetric" = the published Dir(1.2 * 1); "vertices" = e_i
  # The learned preference scale r of PRL. Off by default: with it on, r drifts (log r reached
  # (4.3, -4.4, 0.1) on the digits default) until the hypernetwork never sees one vertex's region.
  c.preference.learn_scale = False
  c.preference.beta0 = 1.0         # beta_i = beta0 * 1 + kappa * e_i
  c.preference.kappa = 4.0
  c.preference.default = ()        # evaluation preference; empty = the "uniform" anchor's vertex

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 0.1
  c.optim.momentum = 0.9
  c.optim.nesterov = True
  c.optim.weight_decay = 5e-4
  c.optim.batch_size = 128
  c.optim.epochs = 200
  c.optim.warmup_epochs = 5
  c.optim.schedule = "step"        # "step" (x decay at milestones) or "cosine"
  c.optim.milestones = (160, 180)  # epochs
  c.optim.decay = 0.1

  c.train = ml_collections.ConfigDict()
  c.train.log_every_steps = 50
  c.train.checkpoint_every_epochs = 10
  c.train.keep_checkpoints = 3
  c.train.eval_batch_size = 1000
  c.train.progress = True
  return c
