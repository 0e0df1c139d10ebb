"""BCE (ERM) on ``synthetic_lt``, a seeded long-tailed multi-label problem of any size.

arg: ``SIZE`` preset, "small" (default; tests and quick checks) or "large" (scaling benchmarks).
"""
from ltjax.defaults import experiment_config


def get_config(arg=None):
    c = experiment_config(dataset="synthetic_lt", model="mlp", method="bce")
    if arg in (None, "", "small"):
        pass
    elif arg == "large":
        c.data.num_train = 200_000
        c.data.num_test = 20_000
        c.data.num_classes = 1000
        c.data.num_features = 256
        c.data.batch_size = 1024
        c.model.hidden = (1024, 1024)
    else:
        raise ValueError(f"bce_synthetic: unknown preset {arg!r}; use 'small' or 'large'")
    c.data.groups.mode = "quantile"
    c.data.batch_size = c.data.batch_size if arg == "large" else 64
    c.optimizer.name = "adamw"
    c.optimizer.lr = 1e-3
    c.optimizer.grad_clip_norm = 0.0
    c.schedule.name = "cosine"
    c.schedule.warmup_steps = 20
    c.train.num_epochs = 10
    c.train.log_every = 50
    return c
