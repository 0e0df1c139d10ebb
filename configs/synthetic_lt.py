"""Any registered method on ``synthetic_lt``, a seeded long-tailed multi-label problem of any size.

arg: ``METHOD[,SIZE]``: a method name (default "bce") and a size preset, "small" (default; 4,000
examples, 20 classes, 64 features) or "large" (200,000 examples, 1,000 classes, 256 features;
scaling benchmarks), e.g. ``--config configs/synthetic_lt.py:db_focal,large``.
"""
from ltjax.defaults import experiment_config


def get_config(arg=None):
    method, _, size = (arg or "bce").partition(",")
    c = experiment_config(dataset="synthetic_lt", model="mlp", method=method or "bce")
    c.data.groups.mode = "quantile"
    c.data.batch_size = 64
    if size in ("", "small"):
        pass
    elif size == "large":
        c.data.num_train = 200_000
        c.data.num_test = 20_000
        c.data.num_classes = 1000
        c.data.num_features = 256
        c.data.batch_size = 1024
        c.model.hidden = (1024, 1024)
    else:
        raise ValueError(f"synthetic_lt config: unknown size preset {size!r}; use 'small' or 'large'")
    c.optimizer.name = "adamw"
    c.optimizer.lr = 1e-3
    c.optimizer.grad_clip_norm = 0.0
    c.schedule.name = "cosine"
    c.schedule.warmup_steps = 20
    c.train.num_epochs = 10
    c.train.log_every = 50
    return c
