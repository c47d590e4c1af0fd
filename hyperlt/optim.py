"""PyTorch-semantics SGD as an optax chain, shared by training and test-time adaptation.

The published SADE and PRL code use ``torch.optim.SGD``, whose weight decay is added to the gradient
*before* momentum (L2 regularisation, not decoupled decay):

    g_t = grad_t + wd * theta_t
    b_t = mu * b_{t-1} + g_t
    theta_{t+1} = theta_t - lr_t * (g_t + mu * b_t)   (Nesterov)    or    theta_t - lr_t * b_t

which is ``optax.add_decayed_weights`` followed by ``optax.sgd``. ``optax.sgd`` without momentum is
plain SGD, so ``momentum=0`` gives ``theta - lr * g``.
"""

from __future__ import annotations

from typing import Any, Callable

import optax


def pytorch_sgd(learning_rate: float | optax.Schedule, momentum: float = 0.0, nesterov: bool = False,
                weight_decay: float = 0.0, decay_mask: Any | Callable[[Any], Any] | None = None
                ) -> optax.GradientTransformation:
  """SGD as ``torch.optim.SGD`` computes it; ``decay_mask`` selects the leaves that are decayed."""
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask=decay_mask),
      optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov),
  )
