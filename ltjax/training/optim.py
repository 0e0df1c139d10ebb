"""Optax optimisers and learning-rate schedules built from ``config.optimizer`` / ``config.schedule``.

The DB/HMT recipe (REFERENCE section 2) is ``sgd``, lr 0.02, momentum 0.9, weight decay 1e-4 (L2
added to the gradient, as torch.optim.SGD does), gradient clipping at global norm 35, a linear
warm-up over 500 steps from lr/3, and x0.1 step decays at epochs 5 and 7.
"""
from __future__ import annotations

import jax
import optax


def learning_rate_schedule(opt_cfg, sched_cfg, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """lr(t) = main(t) * warm(t): warm rises linearly from warmup_init_factor to 1 over warmup_steps
    (mmcv's linear warm-up); main is constant, step decays at epoch boundaries, or cosine over the run."""
    lr = float(opt_cfg.lr)
    if sched_cfg.name == "constant":
        main = optax.constant_schedule(lr)
    elif sched_cfg.name == "step":
        boundaries = {int(e * steps_per_epoch): float(sched_cfg.decay_factor) for e in sched_cfg.decay_epochs}
        main = optax.piecewise_constant_schedule(lr, boundaries)
    elif sched_cfg.name == "cosine":
        main = optax.cosine_decay_schedule(lr, max(int(total_steps), 1), alpha=float(sched_cfg.final_lr_factor))
    else:
        raise ValueError(f"unknown schedule.name {sched_cfg.name!r}; valid: 'step', 'cosine', 'constant'")
    warmup = int(sched_cfg.warmup_steps)
    if warmup <= 0:
        return main
    warm = optax.linear_schedule(float(sched_cfg.warmup_init_factor), 1.0, warmup)
    return lambda step: main(step) * warm(step)


def make_optimizer(opt_cfg, schedule: optax.Schedule, trainable_mask=None) -> optax.GradientTransformation:
    """Gradient clipping -> optimiser; frozen parameters (mask False) get neither update nor decay."""
    parts = []
    if opt_cfg.grad_clip_norm and opt_cfg.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(float(opt_cfg.grad_clip_norm)))
    if opt_cfg.name == "sgd":
        if opt_cfg.weight_decay:
            parts.append(optax.add_decayed_weights(float(opt_cfg.weight_decay)))
        parts.append(
            optax.sgd(schedule, momentum=float(opt_cfg.momentum) or None, nesterov=bool(opt_cfg.nesterov))
        )
    elif opt_cfg.name == "adamw":
        parts.append(
            optax.adamw(
                schedule,
                b1=float(opt_cfg.b1),
                b2=float(opt_cfg.b2),
                eps=float(opt_cfg.eps),
                weight_decay=float(opt_cfg.weight_decay),
            )
        )
    else:
        raise ValueError(f"unknown optimizer.name {opt_cfg.name!r}; valid: 'sgd', 'adamw'")
    tx = optax.chain(*parts)
    if trainable_mask is not None:
        tx = optax.multi_transform(
            {"train": tx, "freeze": optax.set_to_zero()},
            jax.tree.map(lambda trainable: "train" if trainable else "freeze", trainable_mask),
        )
    return tx
