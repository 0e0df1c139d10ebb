"""Asymmetric loss (ASL, Ridnik et al. 2021): asymmetric focusing and probability shifting of negatives."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ltjax.losses.base import ClassStats, check_range, masked_sum, prepare, register_loss


@register_loss("asl", gamma_pos=0.0, gamma_neg=4.0, clip=0.05, eps=1e-8, focal_grad=True)
def asl_loss(logits, labels, mask, stats: ClassStats | None, *, gamma_pos: float, gamma_neg: float, clip: float,
             eps: float, focal_grad: bool) -> jax.Array:
    """Asymmetric loss.

    Formula: l_kc = -[y (1 - p)^{gamma_pos} log max(p, eps) + (1 - y) p_m^{gamma_neg} log max(1 - p_m, eps)],
    p = sigma(z), p_m = max(p - clip, 0) (probability shifting of negatives; clip = 0 disables it).
    log p is log sigma(z); log(1 - p_m) is log(min(sigma(-z) + clip, 1)) (or log sigma(-z) when
    clip = 0), finite at any logit.  ``focal_grad`` True (default): the focusing factors carry gradient;
    False: they are treated as constants (stop_gradient), as in the reference's
    disable_torch_grad_focal_loss variant.
    Reduction: SUM over the B*C (known) entries, as in the reference (scales with batch size).
    Defaults: gamma_pos=0.0, gamma_neg=4.0, clip=0.05, eps=1e-8, focal_grad=True.  With both gammas
    0 and clip 0 it is the summed BCE (clamped at -log eps).  ``stats`` is not used.
    """
    del stats
    check_range("asl", "gamma_pos", gamma_pos, 0.0)
    check_range("asl", "gamma_neg", gamma_neg, 0.0)
    check_range("asl", "clip", clip, 0.0, 1.0, high_open=True)
    check_range("asl", "eps", eps, 0.0, 1.0, high_open=True)
    z, y, known = prepare("asl", logits, labels, mask)

    log_p = jax.nn.log_sigmoid(z)
    if clip > 0:
        log_1m_pm = jnp.log(jnp.minimum(jax.nn.sigmoid(-z) + clip, 1.0))  # >= log(clip): finite
    else:
        log_1m_pm = jax.nn.log_sigmoid(-z)
    if eps > 0:
        log_eps = math.log(eps)
        log_p = jnp.maximum(log_p, log_eps)
        log_1m_pm = jnp.maximum(log_1m_pm, log_eps)

    def stop(x):
        return x if focal_grad else jax.lax.stop_gradient(x)

    term_pos = log_p
    if gamma_pos > 0:
        term_pos = stop(jnp.exp(gamma_pos * jax.nn.log_sigmoid(-z))) * term_pos  # (1 - p)^gamma_pos
    term_neg = log_1m_pm
    if gamma_neg > 0:
        if clip > 0:
            p_m = jnp.maximum(jax.nn.sigmoid(z) - clip, 0.0)
            has = p_m > 0
            # p_m^gamma with a select so neither value nor gradient is NaN where p_m = 0
            factor = jnp.where(has, jnp.exp(gamma_neg * jnp.log(jnp.where(has, p_m, 1.0))), 0.0)
        else:
            factor = jnp.exp(gamma_neg * jax.nn.log_sigmoid(z))  # p^gamma_neg
        term_neg = stop(factor) * term_neg
    values = -jnp.where(y > 0.5, term_pos, term_neg)
    return masked_sum(values, known)
