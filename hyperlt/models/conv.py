"""2-D convolutions in several formulations, one parameter layout: the choice ``model.conv``.

Every formulation computes the same function of the same kernel ``[kh, kw, C_in, C_out]`` (the layout and
initialisation of :class:`flax.linen.Conv`, whose parameter name ``kernel`` it keeps), so checkpoints do
not record it; they differ in how XLA is asked for the gradient, which is where XLA:CPU is slow:

* ``xla``: :func:`jax.lax.conv_general_dilated`, differentiated by JAX. On XLA:CPU (jax 0.10) the forward
  pass and a stride-1 input gradient run at library speed, but the kernel (weight) gradient, a convolution
  whose "kernel" is the whole output map and whose contraction runs over the batch, is 2-5x slower per
  FLOP at batch 128: both operands are first transposed batch-to-channel over the whole batch (fused with
  a recomputation of their elementwise producers), then convolved.
* ``chunked``: the same forward pass, with a custom VJP whose kernel gradient is a sum of per-chunk kernel
  gradients over chunks of ``CHUNK`` images (operands transposed once, then one small ordinary
  convolution per chunk, see :func:`_kernel_gradient`), and whose input
  gradient of a strided convolution is a stride-1 convolution of the zero-dilated output gradient with the
  flipped kernel. Under ``vmap`` over stacked expert kernels each piece runs once per expert instead of as
  one grouped convolution (see :func:`_unrolled_under_vmap`). Layers with fewer than ``MIN_ELEMENTS``
  input elements keep XLA's own gradient, bit for bit. Otherwise summation order differs from ``xla``,
  so results agree to float32 rounding, not bit for bit.

Measured on 2 CPU cores (``benchmarks/bench_conv.py``, batch 128, ``benchmarks/results/conv_*_cpu.json``):
forward plus both gradients of each ResNet-32 3x3 layer take 0.43-0.72x the time with ``chunked``, and the
3-expert ResNet-32 training step 0.58x (137 instead of 78 images/s). An im2col formulation (patches by
slicing, one matrix product, autodiff) was measured too and not kept: 0.49-0.68x on the strided layers
and the stem, but 1.2-2.2x on the stride-1 ones, 1.5x ``xla``'s time over one step's layers (2.8x
``chunked``'s).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import custom_batching
from jax import lax

IMPLS = ("xla", "chunked")
# Images per chunk of the kernel gradient in ``chunked``: 8-16 measured fastest at batch 128 on 2 cores.
CHUNK = 16
# ``chunked`` reformulates a layer's gradient only when its input has at least this many elements
# (B * H * W * C_in per expert, 1 MiB of float32); smaller layers keep XLA's own gradient (computed in the
# same custom VJP, so the vmap form still unrolls them). Measured on 2 cores, 3x3 layers: at >= 2^19
# elements chunking took 0.35-0.78x the time, at 2^18 0.84-0.96x, at <= 2^17 0.96-1.4x.
MIN_ELEMENTS = 1 << 18
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")

Padding = str | Sequence[tuple[int, int]]


def resolve(mode: str) -> str:
  """The formulation for ``model.conv``: an entry of :data:`IMPLS`, or "auto" = ``chunked`` on CPU (where
  it measured faster in the whole training step, see the module docstring) and ``xla`` elsewhere."""
  if mode == "auto":
    return "chunked" if jax.default_backend() == "cpu" else "xla"
  if mode not in IMPLS:
    raise ValueError(f"convolution: expected 'auto' or one of {IMPLS}, got {mode!r}")
  return mode


def explicit_padding(spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                     padding: Padding) -> tuple[tuple[int, int], ...]:
  """``padding`` ("SAME", "VALID" or (low, high) pairs) as (low, high) pairs, as XLA resolves it."""
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(tuple(spatial), tuple(kernel), tuple(strides), padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _conv(x, kernel, strides, padding, groups=1):
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_DIMENSIONS,
                                  feature_group_count=groups)


def _input_gradient(dy, kernel, x_shape, strides, padding, groups, dilate):
  """d(conv)/dx applied to ``dy``: XLA's transposed convolution, or with ``dilate`` for a strided layer,
  dy dilated with zeros and padded (one lax.pad), then a stride-1 convolution with the flipped kernel."""
  if not dilate or all(s == 1 for s in strides) or groups != 1:
    zero = jax.ShapeDtypeStruct(x_shape, dy.dtype)
    return jax.linear_transpose(lambda x: _conv(x, kernel, strides, padding, groups), zero)(dy)[0]
  kh, kw = kernel.shape[:2]
  config = [(0, 0, 0)]
  for n, m, k, s, (lo, _) in zip(x_shape[1:3], dy.shape[1:3], (kh, kw), strides, padding):
    # y[o] = sum_t x[o s + t - lo] w[t]  =>  dx[i] = sum_u dyd[i + lo - (k - 1) + u] w[k - 1 - u], with dyd
    # dy dilated by s; padded to length n + k - 1 so that a VALID stride-1 convolution gives n values.
    low = k - 1 - lo
    config.append((low, n + k - 1 - low - ((m - 1) * s + 1), s - 1))
  config.append((0, 0, 0))
  dilated = lax.pad(dy, jnp.zeros((), dy.dtype), config)
  flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
  return _conv(dilated, flipped, (1, 1), "VALID")


def _kernel_gradient_by_chunk(x, dy, kernel_shape, strides, padding, groups, chunk, accumulate):
  """The kernel gradient as JAX's own transposed convolution on each chunk of images, summed (the general
  case: grouped layers, and batches that ``chunk`` does not divide)."""
  zero = jax.ShapeDtypeStruct(kernel_shape, dy.dtype)
  total = None
  for start in range(0, x.shape[0], chunk):
    stop = min(start + chunk, x.shape[0])
    xc, dyc = x[start:stop], dy[start:stop]
    part = jax.linear_transpose(lambda k, xc=xc: _conv(xc, k, strides, padding, groups), zero)(dyc)[0]
    total = part.astype(accumulate) if total is None else total + part.astype(accumulate)
  return total


def _kernel_gradient(x, dy, kernel_shape, strides, padding, groups, chunk):
  """d(conv)/dkernel applied to ``dy``, as a sum over batch chunks of ``chunk`` images, accumulated in
  float32 at least (so bfloat16 partial sums lose no more than one rounding); ``chunk = 0``: XLA's own.

  Both operands are transposed ONCE for all chunks, x (padded) to [B/chunk, C_in, Hp, Wp, chunk] and dy to
  [B/chunk, Ho, Wo, chunk, C_out]; chunk k's gradient is then an ordinary NHWC convolution of x[k] (the
  input channels as its batch, the chunk's images as its features) with dy[k] as a kernel dilated by the
  stride: a [C_in, kh, kw, C_out] result. (Per-chunk transposed convolutions make XLA transpose every
  chunk's operands separately: 3% slower in the whole step, see ``_kernel_gradient_by_chunk``.)
  """
  if not chunk:  # XLA's own kernel gradient, whole batch
    return _kernel_gradient_by_chunk(x, dy, kernel_shape, strides, padding, groups, x.shape[0], dy.dtype)
  accumulate = jnp.promote_types(dy.dtype, jnp.float32)
  if groups != 1 or x.shape[0] % chunk or any(p < 0 for pair in padding for p in pair):
    return _kernel_gradient_by_chunk(x, dy, kernel_shape, strides, padding, groups, chunk, accumulate).astype(dy.dtype)
  kh, kw = kernel_shape[:2]
  n = x.shape[0] // chunk
  xp = jnp.pad(x, ((0, 0),) + tuple(padding) + ((0, 0),))
  xt = jnp.transpose(xp.reshape((n, chunk) + xp.shape[1:]), (0, 4, 2, 3, 1))
  dyt = jnp.transpose(dy.reshape((n, chunk) + dy.shape[1:]), (0, 2, 3, 1, 4))
  total = None
  for k in range(n):
    # Output positions beyond the kernel (from high padding the stride never reaches) are dropped.
    part = lax.conv_general_dilated(xt[k], dyt[k], (1, 1), "VALID", rhs_dilation=tuple(strides),
                                    dimension_numbers=_DIMENSIONS)[:, :kh, :kw, :].astype(accumulate)
    total = part if total is None else total + part
  return jnp.transpose(total, (1, 2, 0, 3)).astype(dy.dtype)


def _unrolled_under_vmap(fn: Callable) -> Callable:
  """``fn`` (positional array arguments, one array result) whose batching rule applies it once per index
  of the mapped axis and stacks the results. Under ``vmap`` over stacked expert kernels XLA would otherwise
  emit ONE grouped convolution (``feature_group_count = T``), which XLA:CPU runs several times slower than
  T separate ones; applied to the pieces of the custom VJP below, the ``vmap`` expert form then computes
  forward pass, input gradient and kernel gradient as T ordinary convolutions each."""
  mapped = custom_batching.custom_vmap(fn)

  @mapped.def_vmap
  def rule(axis_size, in_batched, *args):
    per_index = [mapped(*(a[t] if batched else a for a, batched in zip(args, in_batched)))
                 for t in range(axis_size)]
    return jnp.stack(per_index), True

  return mapped


@functools.lru_cache(maxsize=None)
def _pieces(strides, padding, groups, chunk, dilate):
  """(forward, input gradient, kernel gradient) of one layer configuration, each unrolled under vmap."""
  forward = _unrolled_under_vmap(lambda x, k: _conv(x, k, strides, padding, groups))
  input_gradient = _unrolled_under_vmap(
      lambda dy, k, x: _input_gradient(dy, k, x.shape, strides, padding, groups, dilate))
  kernel_gradient = _unrolled_under_vmap(
      lambda x, dy, k: _kernel_gradient(x, dy, k.shape, strides, padding, groups, chunk))
  return forward, input_gradient, kernel_gradient


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def chunked_conv(x, kernel, strides, padding, groups=1, chunk=CHUNK, dilate=True):
  """``lax.conv_general_dilated`` (NHWC, HWIO; explicit padding pairs) whose VJP computes the kernel
  gradient over batch chunks of ``chunk`` images (0: XLA's own) and, with ``dilate``, a strided layer's
  input gradient as a stride-1 convolution; forward pass and both gradients run once per expert under
  vmap."""
  forward, _, _ = _pieces(strides, padding, groups, chunk, dilate)
  return forward(x, kernel)


def _chunked_fwd(x, kernel, strides, padding, groups, chunk, dilate):
  return chunked_conv(x, kernel, strides, padding, groups, chunk, dilate), (x, kernel)


def _chunked_bwd(strides, padding, groups, chunk, dilate, residuals, dy):
  x, kernel = residuals
  _, input_gradient, kernel_gradient = _pieces(strides, padding, groups, chunk, dilate)
  # x and kernel are passed for their shapes (and, under vmap, for which of them carry the expert axis).
  return input_gradient(dy, kernel, x), kernel_gradient(x, dy, kernel)


chunked_conv.defvjp(_chunked_fwd, _chunked_bwd)


def conv2d(x: jnp.ndarray, kernel: jnp.ndarray, strides: Sequence[int] = (1, 1), padding: Padding = "SAME",
           groups: int = 1, impl: str = "xla") -> jnp.ndarray:
  """A 2-D convolution of images ``x`` [B, H, W, C_in] with ``kernel`` [kh, kw, C_in / groups, C_out] in
  the formulation ``impl`` (an entry of :data:`IMPLS`)."""
  strides = tuple(strides)
  pads = explicit_padding(x.shape[1:3], kernel.shape[:2], strides, padding)
  if impl == "xla":
    return _conv(x, kernel, strides, pads, groups)
  if impl == "chunked":
    # A symbolic batch size (jax.export, hyperlt.inference.export) has no size to compare; only the gradient
    # depends on this choice, and an exported inference function takes none.
    if not jax.export.is_symbolic_dim(x.size) and x.size >= MIN_ELEMENTS:
      return chunked_conv(x, kernel, strides, pads, groups, CHUNK, True)
    return chunked_conv(x, kernel, strides, pads, groups, 0, False)  # XLA's own gradient
  raise ValueError(f"convolution: expected one of {IMPLS}, got {impl!r}")


class Conv(nn.Module):
  """A bias-free 2-D convolution with :class:`flax.linen.Conv`'s parameter (``kernel``, same shape, same
  initialiser call, so the same values and checkpoints) and compute dtype, in the formulation ``impl``.

  Named ``Conv`` so that Flax's automatic names (``Conv_0``, ...) match those of ``nn.Conv``.
  """

  features: int
  kernel_size: Sequence[int]
  strides: int | Sequence[int] = (1, 1)
  padding: Padding = "SAME"
  feature_group_count: int = 1
  use_bias: bool = False  # accepted for nn.Conv's signature; only bias-free layers are supported
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  impl: str = "xla"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if self.use_bias:
      raise NotImplementedError("hyperlt.models.conv.Conv: bias-free convolutions only")
    shape = tuple(self.kernel_size) + (x.shape[-1] // self.feature_group_count, self.features)
    kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
    return conv2d(x, kernel, strides, self.padding, self.feature_group_count, self.impl)


def make_conv(impl: str) -> type[nn.Module] | Callable[..., nn.Module]:
  """The convolution module to build layers with: ``nn.Conv`` itself for ``xla`` (so the default path is
  Flax's own, bit for bit), :class:`Conv` with ``impl`` otherwise. Bias-free layers only."""
  if impl == "xla":
    return nn.Conv
  return functools.partial(Conv, impl=impl)
