"""A seconds-long BCE run on a small synthetic_lt problem, for CLI tests. arg: number of epochs."""
from ltjax.defaults import experiment_config


def get_config(arg=None):
    c = experiment_config("synthetic_lt", "mlp", "bce")
    c.data.num_train = 512
    c.data.num_test = 256
    c.data.num_classes = 12
    c.data.num_features = 16
    c.data.min_prevalence = 0.02
    c.data.groups.mode = "quantile"
    c.data.batch_size = 32
    c.data.eval_batch_size = 64
    c.model.hidden = (32,)
    c.model.dropout = 0.1
    c.optimizer.name = "adamw"
    c.optimizer.lr = 1e-2
    c.schedule.name = "cosine"
    c.schedule.warmup_steps = 5
    c.train.num_epochs = int(arg) if arg else 2
    c.train.log_every = 4
    c.train.checkpoint_every = 8
    c.train.progress_bar = "off"
    return c
