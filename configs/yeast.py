"""Any registered method on the real Mulan yeast data with an MLP (the shared recipe for yeast tables).

arg: the method name (default "bce"), e.g. ``--config configs/yeast.py:db_focal``; the seed is
``--config.seed``.  Yeast's classes are mostly frequent: under the DB thresholds (100/20) the default
split gives 13 head, 0 medium and 1 tail class, so these configs group by thirds of the class list
sorted by n_c (5 head / 4 medium / 5 tail).
"""
from ltjax.defaults import experiment_config


def get_config(arg=None):
    c = experiment_config(dataset="yeast", model="mlp", method=arg or "bce")
    c.data.groups.mode = "quantile"
    c.data.batch_size = 64
    c.model.hidden = (256,)
    c.model.dropout = 0.3
    c.optimizer.name = "adamw"
    c.optimizer.lr = 1e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.grad_clip_norm = 0.0
    c.schedule.name = "cosine"
    c.schedule.warmup_steps = 50
    c.train.num_epochs = 40
    c.train.log_every = 100
    c.train.checkpoint_every = 500
    return c
