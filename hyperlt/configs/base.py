"""The default configuration every recipe starts from; each field is documented where it is set."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # The method preset the config started from (hyperlt.configs.presets: ce, balanced_softmax, sade, balpoe,
  # ride, prl, ...); "" = none. The preset is applied when the method is chosen (the override method=NAME,
  # presets.apply, or a config file's assignment read by configs.load); later settings win.
  c.method = ""

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
  c.data.rotation = 0.0           # random rotation by up to this many degrees (published CIFAR recipe: 15)
  c.data.many_above = 100         # shot groups: many > 100, medium 20..100, few < 20 training images
  c.data.few_below = 20
  # Source "lists" (ImageNet-LT, Places-LT, iNaturalist): SADE-style list files, one "relative/path label"
  # per line, over an image directory; images are decoded on the host and streamed (hyperlt.data.lists).
  c.data.root = ""                # directory the list paths are relative to
  c.data.train_list = ""          # training list (used as given: already long-tailed)
  c.data.val_list = ""            # optional validation list (else data.val_fraction of the training list)
  c.data.test_list = ""           # balanced test list
  c.data.image_size = 224         # side of the training crop and of the test centre crop
  c.data.resize = 256             # test images: shorter side resized to this before the centre crop
  c.data.min_scale = 0.08         # random-resized crop: smallest area share
  c.data.color_jitter = 0.0       # brightness/contrast/saturation jitter strength (SADE ImageNet-LT: 0.4)
  c.data.workers = 0              # decoding threads; 0 = every core
  c.data.prefetch = 2             # batches decoded (and batches on the device) ahead of the step

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet_cifar"  # or "resnet50", "resnext50_32x4d", "resnet152" (ImageNet-style)
  c.model.stage_sizes = (5, 5, 5)  # ResNet-32
  c.model.widths = (16, 32, 64)
  c.model.branch_stages = 2        # SADE split: stages 2-3 per expert; 0 = all features shared
  c.model.num_experts = 3
  c.model.head = "hyper"           # "hyper": heads from the hypernetwork; "static": fixed per-expert heads
  c.model.hyper_hidden = (128, 128, 128)
  c.model.scale = 30.0             # cosine-classifier scale s
  c.model.combine = "weighted"     # z = sum_j r_hat_j v_j; "mean" = the published code's mean of v_j
  c.model.dtype = "float32"        # compute dtype of the backbone ("bfloat16" for mixed precision)
  # How the stacked expert branches run (hyperlt.models.expert_split.FORMS): "vmap" (one batched
  # computation), "unrolled" (expert by expert in the same compiled step; XLA:CPU runs vmapped convolutions
  # as slow grouped convolutions), "map" (a compiled loop over the experts), or "auto": training times the
  # candidate forms for a few steps at start-up and takes the fastest (recorded in WORKDIR/forms.json);
  # evaluation takes unrolled on CPU, vmap elsewhere. Parameters and checkpoints are the same either way,
  # so a resumed run may change it.
  c.model.experts = "auto"
  # How convolutions are differentiated (hyperlt.models.conv.IMPLS): "xla", "chunked" (batch-chunked
  # kernel gradients, faster on XLA:CPU), or "auto" = chunked on CPU for the CIFAR ResNet, xla otherwise
  # (timed at start-up like model.experts where no CPU measurement decides it). Same parameters either way.
  c.model.conv = "auto"
  # ImageNet-style backbones only (stage sizes and widths come from the architecture):
  c.model.width_multiplier = 1.0   # scales every width (< 1 for small tests)
  c.model.branch_width = 1.0       # scales stages 3-4 (shared or not); 0.75 = SADE's reduce_dimension
  c.model.posthoc_tau = 0.0        # evaluation predicts argmax(z - tau * log pi): post-hoc logit adjustment

  c.loss = ml_collections.ConfigDict()
  c.loss.mode = "continuous"       # or "paper": sample i always gets anchor loss i
  c.loss.anchors = ("forward", "uniform", "backward")
  c.loss.tau = 2.0                 # backward anchor strength (2 for CIFAR-100-LT/ImageNet-LT, 1 otherwise)
  c.loss.objective = "stch"        # "stch", "stch_code" (published formula) or "sum"
  c.loss.mu = 0.3                  # STCH temperature: 0.3 for CIFAR IR 100/50, 0.1 otherwise
  c.loss.mixup_alpha = 0.0         # mixup with lam ~ Beta(a, a) (BalPoE: 0.4); 0 = off
  c.loss.diversity = 0.0           # RIDE's diversity weight (0.2); 0 = off
  c.loss.diversity_temperature = 1.0  # RIDE: KL between softmax(v / T) of each expert and of their mean
  # Deferred re-weighting (DRW): from this share of the training steps on, class-balanced example weights
  # with loss.reweight_beta (RIDE/LDAM-DRW: 0.8, i.e. epoch 160 of 200, beta 0.9999); 0 = off.
  c.loss.reweight_start = 0.0
  c.loss.reweight_beta = 0.9999

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
  # Training steps per compiled call on device-resident data (K steps unrolled in one program,
  # hyperlt.training.loop.make_multi_step; streamed data always takes one). The same computation to float
  # rounding, not bit for bit, so 1 here (the digits default repeats exactly); the CIFAR recipes take 2. On
  # 2 CPU cores their step took 0.89x the time with 2 per call (3x the compile time) and 0.85x with 4 (18x):
  # benchmarks/results/steps_per_call_cifar_cpu.json.
  c.train.steps_per_call = 1

  # Data parallelism (hyperlt.distributed): the batch is split over a "data" mesh axis, parameters are
  # replicated. Several processes (hosts) join through jax.distributed; empty/default launch fields fall
  # back to $HYPERLT_COORDINATOR_ADDRESS, $HYPERLT_NUM_PROCESSES and $HYPERLT_PROCESS_ID.
  c.parallel = ml_collections.ConfigDict()
  c.parallel.num_devices = 0             # devices on the data axis; 0 = every device (of every process)
  c.parallel.coordinator_address = ""    # "host:port" of process 0, or "auto" (SLURM/MPI/TPU detection)
  c.parallel.num_processes = 1
  c.parallel.process_id = 0
  return c
