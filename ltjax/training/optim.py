"""Optax optimisers and learning-rate schedules built from ``config.optimizer`` / ``config.schedule``.

The DB/HMT recipe (REFERENCE section 2) is ``sgd``, lr 0.02, momentum 0.9, weight decay 1e-4 (L2
added to the gradient, as torch.optim.SGD does), gradient clipping at global norm 35, a linear
warm-up over 500 steps from lr/3, and x0.1 step decays at epochs 5 and 7.

Optimisers: ``sgd`` (L2 weight decay added to the gradient), ``adam`` (torch.optim.Adam: L2 added to the
gradient before the moments, as the COMIC / LDRNet recipes use it) and ``adamw`` (decoupled decay).

Schedules: ``constant``, ``step``, ``cosine`` and ``one_cycle`` (torch's OneCycleLR with cosine
annealing, the ASL / CPRFL / CSSFE recipes): over ``T`` steps the rate rises from ``lr / div_factor``
to ``lr`` along half a cosine during the first ``floor(pct_start * T)`` steps, then falls along half a
cosine to ``lr / (div_factor * final_div_factor)`` at step ``T`` (optax's
``cosine_onecycle_schedule``).  The one-cycle schedule brings its own warm-up, so ``warmup_steps``
must be 0 with it.

Parameter groups (``optimizer.param_groups``): named entries ``{pattern, lr_mult, weight_decay}``; a trainable
parameter whose path (``"backbone/trunk/conv1/kernel"``) matches ``pattern`` (``re.search``, first group
wins) is updated with the learning rate times ``lr_mult`` and its own weight decay (``weight_decay`` < 0:
``optimizer.weight_decay``), e.g. a backbone at 0.1x.  Gradient clipping stays global over all trainable
parameters.
"""
from __future__ import annotations

import re

import jax
import optax

from ltjax.errors import ConfigError
from ltjax.optim_defaults import optimizer_defaults, schedule_defaults  # noqa: F401 (re-exported)
from ltjax.params import param_path

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("step", "cosine", "constant", "one_cycle")


def learning_rate_schedule(opt_cfg, sched_cfg, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """lr(t) = main(t) * warm(t): warm rises linearly from warmup_init_factor to 1 over warmup_steps
    (mmcv's linear warm-up); main is constant, step decays at epoch boundaries, cosine over the run, or
    one-cycle (module docstring)."""
    lr = float(opt_cfg.lr)
    warmup = int(sched_cfg.warmup_steps)
    if sched_cfg.name == "constant":
        main = optax.constant_schedule(lr)
    elif sched_cfg.name == "step":
        boundaries = {int(e * steps_per_epoch): float(sched_cfg.decay_factor) for e in sched_cfg.decay_epochs}
        main = optax.piecewise_constant_schedule(lr, boundaries)
    elif sched_cfg.name == "cosine":
        main = optax.cosine_decay_schedule(lr, max(int(total_steps), 1), alpha=float(sched_cfg.final_lr_factor))
    elif sched_cfg.name == "one_cycle":
        if warmup > 0:
            raise ConfigError(
                f"schedule.name='one_cycle' has its own warm-up (schedule.pct_start); set schedule.warmup_steps=0 "
                f"(got {warmup})"
            )
        pct = float(sched_cfg.get("pct_start", 0.3))
        if not 0.0 < pct < 1.0:
            raise ConfigError(f"schedule.pct_start must lie strictly between 0 and 1, got {pct}")
        main = optax.cosine_onecycle_schedule(
            max(int(total_steps), 2), lr, pct_start=pct, div_factor=float(sched_cfg.get("div_factor", 25.0)),
            final_div_factor=float(sched_cfg.get("final_div_factor", 1e4)),
        )
    else:
        raise ConfigError(f"unknown schedule.name {sched_cfg.name!r}; valid: {', '.join(map(repr, SCHEDULES))}")
    if warmup <= 0:
        return main
    warm = optax.linear_schedule(float(sched_cfg.warmup_init_factor), 1.0, warmup)
    return lambda step: main(step) * warm(step)


def _base_optimizer(opt_cfg, schedule, weight_decay: float) -> list:
    """The optimiser's own transformations (after clipping) with the given weight decay."""
    name = opt_cfg.name
    if name == "sgd":
        parts = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
        return parts + [optax.sgd(schedule, momentum=float(opt_cfg.momentum) or None, nesterov=bool(opt_cfg.nesterov))]
    if name == "adam":
        parts = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
        return parts + [optax.adam(schedule, b1=float(opt_cfg.b1), b2=float(opt_cfg.b2), eps=float(opt_cfg.eps))]
    if name == "adamw":
        return [optax.adamw(schedule, b1=float(opt_cfg.b1), b2=float(opt_cfg.b2), eps=float(opt_cfg.eps),
                            weight_decay=weight_decay)]
    raise ConfigError(f"unknown optimizer.name {name!r}; valid: {', '.join(map(repr, OPTIMIZERS))}")


def _groups(opt_cfg) -> list[tuple[str, re.Pattern, float, float]]:
    groups = opt_cfg.get("param_groups", None)
    out = []
    for name, g in (groups.items() if groups else ()):
        unknown = set(g.keys()) - {"pattern", "lr_mult", "weight_decay"}
        if unknown or "pattern" not in g:
            raise ConfigError(
                f"optimizer.param_groups.{name} must have the fields pattern, lr_mult, weight_decay; got {sorted(g.keys())}"
            )
        try:
            rx = re.compile(str(g["pattern"]))
        except re.error as e:
            raise ConfigError(f"optimizer.param_groups.{name}.pattern {g['pattern']!r} is not a regular expression ({e})") from None
        wd = float(g.get("weight_decay", -1.0))
        out.append((str(name), rx, float(g.get("lr_mult", 1.0)), float(opt_cfg.weight_decay) if wd < 0 else wd))
    return out


def make_optimizer(opt_cfg, schedule: optax.Schedule, trainable_mask=None, params=None) -> optax.GradientTransformation:
    """Gradient clipping -> optimiser; frozen parameters (mask False) get neither update nor decay.
    With ``optimizer.param_groups`` (module docstring) ``params`` (or any pytree of the same structure) is needed
    to match the groups' patterns against the parameter paths."""
    clip = []
    if opt_cfg.grad_clip_norm and opt_cfg.grad_clip_norm > 0:
        clip.append(optax.clip_by_global_norm(float(opt_cfg.grad_clip_norm)))
    groups = _groups(opt_cfg)
    if not groups:
        tx = optax.chain(*clip, *_base_optimizer(opt_cfg, schedule, float(opt_cfg.weight_decay)))
        if trainable_mask is not None:
            tx = optax.multi_transform(
                {"train": tx, "freeze": optax.set_to_zero()},
                jax.tree.map(lambda trainable: "train" if trainable else "freeze", trainable_mask),
            )
        return tx
    if params is None:
        raise ValueError("make_optimizer: optimizer.param_groups needs the parameter tree to match its patterns")
    if trainable_mask is None:
        trainable_mask = jax.tree.map(lambda _: True, params)
    hits = {name: 0 for name, *_ in groups}

    def label(path, _leaf, trainable):
        if not trainable:
            return "freeze"
        text = param_path(path)
        for name, rx, _, _ in groups:
            if rx.search(text):
                hits[name] += 1
                return f"group:{name}"
        return "default"

    labels = jax.tree_util.tree_map_with_path(label, params, trainable_mask)
    empty = [n for n, h in hits.items() if not h]
    if empty:
        raise ConfigError(f"optimizer.param_groups {empty}: the pattern matches no trainable parameter")
    transforms = {"freeze": optax.set_to_zero(),
                  "default": optax.chain(*_base_optimizer(opt_cfg, schedule, float(opt_cfg.weight_decay)))}
    for name, _, mult, wd in groups:
        scaled = (lambda m: (lambda step: schedule(step) * m))(mult)
        transforms[f"group:{name}"] = optax.chain(*_base_optimizer(opt_cfg, scaled, wd))
    train_labels = jax.tree.map(lambda lab: "freeze" if lab == "freeze" else "train", labels)
    return optax.chain(
        optax.multi_transform({"train": optax.chain(*clip) if clip else optax.identity(), "freeze": optax.set_to_zero()},
                              train_labels),
        optax.multi_transform(transforms, labels),
    )
