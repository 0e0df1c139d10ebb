"""The base experiment config every ``configs/NAME.py`` starts from (all fields, with defaults).

Dataset-, model- and method-specific fields live in ``config.data``, ``config.model`` and
``config.method``; a config file adds the fields of the parts it selects.  Every field that exists
here can be overridden on the command line; a field that does not exist is an error.
"""
from __future__ import annotations

import ml_collections

from ltjax.optim_defaults import optimizer_defaults, schedule_defaults


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # model init, dropout/noise keys and data order all derive from this

    # ---- data -------------------------------------------------------------------------------
    c.data = ml_collections.ConfigDict()
    c.data.name = "yeast"  # a name in ltjax.data.DATASETS
    c.data.groups = ml_collections.ConfigDict()
    c.data.groups.mode = "threshold"  # "threshold" (DB protocol) | "quantile"
    c.data.groups.head_min = 100.0  # head: n_c >= head_min
    c.data.groups.tail_max = 20.0  # tail: n_c < tail_max
    c.data.groups.quantiles = (1 / 3, 2 / 3)  # quantile mode: tail / head cut points
    c.data.sampler = "uniform"  # "uniform" (shuffled epochs) | "class_aware" (REFERENCE section 2) | "reverse"
    c.data.class_aware_draws = 3  # images taken per class draw
    c.data.class_aware_epoch = "db"  # class-aware epoch: "db" (max(n_c) * C / divisor) | "num_examples" (N)
    c.data.class_aware_epoch_divisor = 4  # "db" epoch length = max(n_c) * C / divisor
    # partial labels (COMIC's PLT setting, ltjax/data/partial.py): hide this fraction of the training
    # positives (seeded by missing_seed alone, so every method sees the same ones); test labels stay complete
    c.data.missing_ratio = 0.0
    c.data.missing_seed = 0
    c.data.missing_min_observed = 1  # never hide a class's last positive(s); 0 = a plain uniform draw
    # a validation split carved from the training split for a dataset without one (ltjax/data/stratify.py):
    # this fraction of the training examples (or groups, e.g. patients), multi-label stratified, seeded
    c.data.val_from_train = 0.0
    c.data.val_seed = 0
    c.data.batch_size = 32  # global batch size (all processes together)
    c.data.eval_batch_size = 256
    c.data.num_workers = 0  # grain worker processes (0 = read in threads of the main process)
    c.data.read_threads = 2  # grain reader threads in the main process
    c.data.prefetch_batches = 4  # batches read ahead (bounds the pipeline's memory)
    # device-resident pipeline (ltjax/data/on_device.py): the split lives on the accelerators and images
    # are cropped / flipped / colour-jittered / normalised inside the jitted step
    c.data.on_device = False
    c.data.device_store_size = 0  # images: side of the stored training images; 0 = native size or auto
    c.data.device_max_gb = 8.0  # refuse device stores larger than this many GiB (they are replicated)
    # image datasets: "" (off) | "map" | "pooled": run the frozen backbone once per image and train what sits
    # on top of it on the stored outputs (ltjax/training/frozen_features.py)
    c.data.frozen_features = ""

    # ---- model / method ---------------------------------------------------------------------
    c.model = ml_collections.ConfigDict()
    c.model.name = "mlp"  # a name in ltjax.models.MODELS
    c.method = ml_collections.ConfigDict()
    c.method.name = "bce"  # a name in ltjax.methods.METHODS

    # ---- optimisation (fields: ltjax/optim_defaults.py; what they do: ltjax/training/optim.py) --------
    c.optimizer = optimizer_defaults()
    c.schedule = schedule_defaults()

    # ---- training loop ----------------------------------------------------------------------
    c.train = ml_collections.ConfigDict()
    c.train.num_epochs = 8
    c.train.steps_per_epoch = 0  # 0: derived from the sampler's epoch length and the batch size
    c.train.compute_dtype = "float32"  # "float32" | "bfloat16" (parameters stay float32)
    c.train.ema_decay = 0.0  # > 0: keep an exponential moving average of the parameters (e.g. 0.998)
    c.train.log_every = 50  # steps between log lines / metric records
    c.train.checkpoint_every = 500  # steps between checkpoints (and one at the end of every epoch)
    c.train.keep_checkpoints = 3
    c.train.eval_every_epochs = 0  # 0: evaluate only at the end
    # "SPLIT:METRIC" (e.g. "val:mAP"): report the checkpoint that is best on that split, never on
    # eval.split; "" keeps the last one (ltjax/training/selection.py)
    c.train.select_on = ""
    c.train.select_every_epochs = 1  # candidates: every such epoch end of each training phase, and each phase end
    c.train.progress_bar = "auto"  # "auto" (on a terminal) | "on" | "off"

    # ---- devices ----------------------------------------------------------------------------
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # size of the data-parallel axis; -1: all devices / model
    c.mesh.model = 1  # size of the parameter-sharding axis
    c.mesh.shard_params = False  # shard large parameters over the "model" axis

    c.distributed = ml_collections.ConfigDict()
    c.distributed.enabled = "auto"  # "auto" (launcher environment), "on", "off"
    c.distributed.coordinator_address = ""  # host:port of process 0
    c.distributed.num_processes = 0  # 0: from the environment
    c.distributed.process_id = -1  # -1: from the environment

    # ---- evaluation -------------------------------------------------------------------------
    c.eval = ml_collections.ConfigDict()
    c.eval.split = "test"
    c.eval.threshold = 0.5  # for micro/macro F1
    c.eval.thresholds = "fixed"  # or "val_f1" / "val_f1_global": tuned on the val split (ltjax/thresholds.py)
    c.eval.top_k = (1, 3, 5)  # for P@k and nDCG@k
    c.eval.use_ema = True  # with train.ema_decay > 0: report the EMA weights (eval.json keeps both)
    return c


def experiment_config(dataset: str, model: str, method: str) -> ml_collections.ConfigDict:
    """The base config with the fields of one dataset, model and method filled in with their defaults."""
    from ltjax.data import dataset_defaults
    from ltjax.methods import METHODS
    from ltjax.models import model_defaults

    c = base_config()
    c.data.update(dataset_defaults(dataset))
    c.data.name = dataset
    c.model = model_defaults(model)
    spec = METHODS.get(method)
    c.method = spec.defaults()
    for path, value in spec.config_updates.items():  # e.g. RS selects the class-aware sampler
        *parents, leaf = path.split(".")
        node = c
        for part in parents:
            node = node[part]
        node[leaf] = value
    return c
