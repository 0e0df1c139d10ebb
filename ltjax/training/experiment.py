"""``Experiment``: everything built from a config that training, passes and evaluation share.

The dataset and its feed (:mod:`ltjax.training.feed`), the mesh, the model, the method's phases
(:mod:`ltjax.training.phases`) with one optimiser, schedule and jitted step per training phase, the train
state's shapes and shardings, the initial state, phase transitions, passes and prediction.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import losses
from ltjax.data import build_dataset, partial
from ltjax.errors import CheckpointError, ConfigError
from ltjax.methods import METHODS
from ltjax.methods.base import PassContext, path_mask
from ltjax.training import devices
from ltjax.training.checkpoint import Checkpointer
from ltjax.training.feed import gather_valid, make_feed
from ltjax.training.optim import learning_rate_schedule, make_optimizer
from ltjax.training.phases import plan_phases
from ltjax.training.step import TrainState, init_variables, make_collect_step, make_eval_step, make_phase_step

DEFAULT_TOP_K = (1, 3, 5)  # ltjax.defaults' eval.top_k
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config):
    try:
        return _DTYPES[config.train.compute_dtype]
    except KeyError:
        raise ValueError(
            f"train.compute_dtype must be one of {sorted(_DTYPES)}, got {config.train.compute_dtype!r}"
        ) from None


def _and(a, b):
    return jax.tree.map(lambda x, y: bool(x) and bool(y), a, b)


class Experiment:
    def __init__(self, config, dataset=None):
        self.config = config
        self.dataset = dataset if dataset is not None else build_dataset(config.data)
        if partial.hidden_split(self.dataset) is None:  # a dataset passed in: data.missing_ratio still applies
            self.dataset = partial.apply_missing_labels(self.dataset, config.data)
        self.meta = self.dataset.meta
        self.method = METHODS.get(config.method.name)
        self.dtype = compute_dtype(config)
        self.mesh = devices.make_mesh(config.mesh)
        self.model = self.method.build_model(config, self.meta, self.dtype)
        rng = jax.random.key(int(config.seed))
        self.init_rng, self.train_rng = jax.random.split(rng)
        self.frozen = None
        if config.data.get("frozen_features", ""):  # the backbone ran once per image: train on its outputs
            from ltjax.training.frozen_features import FrozenFeatures

            self.frozen = FrozenFeatures(config, self.dataset, self.model, self.init_rng, self.dtype, log=None)
            self.dataset, self.model = self.frozen.dataset, self.frozen.model
            self.meta = self.dataset.meta
        self.stats = losses.ClassStats.from_meta(self.meta)
        self.replicated = devices.replicated(self.mesh)
        self.batch_sharding = devices.batch_sharding(self.mesh)
        batch = int(config.data.batch_size)
        if batch % self.mesh.shape["data"]:
            n = self.mesh.shape["data"]
            raise ConfigError(
                f"data.batch_size={batch} must be divisible by the data-parallel mesh axis ({n} devices): "
                f"set --config.data.batch_size={max(n, batch // n * n)} (or {batch // n * n + n}), or use fewer "
                "devices (--config.mesh.data=...)"
            )
        self._check_eval_fields()
        self.feed = make_feed(self.dataset, config, self.batch_sharding, self.replicated)
        self.device_data = self.feed.device_data
        self.ema_decay = float(config.train.get("ema_decay", 0.0))
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must lie in [0, 1) (0 = no EMA), got {self.ema_decay}")

        from ltjax.training.selection import parse_select_on

        # train.select_on: (split, metric) to pick the checkpoint on, or None (the last one); checked here,
        # before any training, against the dataset's splits
        self.select = parse_select_on(
            config.train.get("select_on", ""), str(config.eval.split), self.dataset.splits, self.meta.groups.names,
            tuple(int(k) for k in config.eval.top_k),
            extra=("odir_final",) if "odir" in self.meta.info.get("extra_metrics", ()) else ())
        self.phases = plan_phases(config, self.method, self.dataset.split("train").labels)
        self.total_steps = self.phases[-1].end
        self.example = np.zeros((1, *self.meta.input_shape), self.meta.input_dtype)
        self.abstract_variables = jax.eval_shape(lambda k: init_variables(self.model, k, self.example), self.init_rng)
        params_shape = self.abstract_variables["params"]
        if self.frozen is None:
            self.model_mask = self.method.trainable_mask(config, params_shape)
        else:  # the frozen trunk is gone from the params: everything left trains
            self.model_mask = jax.tree.map(lambda _: True, params_shape)
        for plan in self.phases:
            if plan.kind != "train":
                continue
            mask = self.model_mask
            if plan.spec.trainable:
                mask = _and(mask, path_mask(params_shape, plan.spec.trainable, f"phase {plan.name!r} trainable"))
            if plan.spec.reinit:
                path_mask(params_shape, plan.spec.reinit, f"phase {plan.name!r} reinit")  # check the patterns
            plan.schedule_fn = learning_rate_schedule(plan.optimizer, plan.schedule, plan.steps_per_epoch, plan.length)
            plan.tx = make_optimizer(plan.optimizer, plan.schedule_fn, mask, params_shape)
        self._method_state0 = None
        self._steps = {}
        # the first training phase, under the names a single-phase run has always had
        first = self.train_phase_of(0)
        self.sampler = first.samplers[first.streams[0]]
        self.steps_per_epoch = first.steps_per_epoch
        self.schedule = first.schedule_fn
        self.tx = first.tx
        self.state_shardings = self._shardings(0)
        self.abstract_state = self._abstract(0)
        if len(first.streams) == 1:  # the first phase's jitted step on one batch (its stream's)
            raw, sh = self._raw_step(first.index)
            stream = first.streams[0]
            self.train_step = jax.jit(
                lambda state, batch, rng: raw(state, {stream: batch}, rng),
                in_shardings=(sh, self.feed.batch_shardings(), self.replicated),
                out_shardings=(sh, self.replicated),
                donate_argnums=0,
            )
        eval_step = make_eval_step(self.model, self.method, self.dtype, config.method)
        self._eval = jax.jit(
            lambda params, batch_stats, mstate, batch: eval_step(params, batch_stats, self.feed.eval_inputs(batch), mstate),
            out_shardings=self.batch_sharding,
        )

    def _check_eval_fields(self) -> None:
        """eval.split and eval.top_k against the dataset, before any training (not after it)."""
        cfg, c = self.config.eval, self.meta.num_classes
        if str(cfg.split) not in self.dataset.splits:
            raise ConfigError(
                f"eval.split = {cfg.split!r} is not a split of dataset {self.config.data.name!r}; its splits: "
                f"{', '.join(self.dataset.splits)} (set --config.eval.split=NAME)")
        from ltjax import thresholds

        thresholds.check_mode(cfg.get("thresholds", "fixed"), self.dataset.splits)
        ks = [int(k) for k in cfg.top_k]
        bad = [k for k in ks if not 1 <= k <= c]
        if bad:
            ok = tuple(k for k in ks if 1 <= k <= c) or (1,)
            if tuple(ks) == DEFAULT_TOP_K:  # the default, not the user's choice: keep the k that exist
                cfg.top_k = ok
                if jax.process_index() == 0:
                    print(f"note: eval.top_k is {ok} (the default {DEFAULT_TOP_K} has k > the {c} classes)", flush=True)
                return
            raise ConfigError(
                f"eval.top_k = {tuple(ks)} asks for P@k / nDCG@k with k = {', '.join(map(str, bad))}, but the "
                f"dataset has {c} classes; set --config.eval.top_k=\"{ok}\" (every k between 1 and {c})")

    # -- phases and state ----------------------------------------------------------------------------

    def train_phase_of(self, index: int):
        """The training phase whose optimiser state the train state holds during phase ``index``: the last
        training phase at or before it (the first training phase before any)."""
        trains = [p for p in self.phases if p.kind == "train"]
        before = [p for p in trains if p.index <= index]
        return before[-1] if before else trains[0]

    def initial_method_state(self):
        """The method's initial state (host numpy, computed once)."""
        if self._method_state0 is None:
            init = self.method.init_state
            if init is None:
                self._method_state0 = {}
            else:
                outputs = jax.eval_shape(
                    lambda v: self.model.apply({"params": v["params"], **({"batch_stats": v["batch_stats"]}
                                                                        if v["batch_stats"] else {})},
                                               self.example, train=False), self.abstract_variables)
                self._method_state0 = init(self.config, self.meta, self.dataset, outputs)
        return self._method_state0

    def _shapes(self, index: int):
        tx = self.train_phase_of(index).tx
        v = self.abstract_variables
        mstate = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), self.initial_method_state())
        return TrainState(
            step=jax.ShapeDtypeStruct((), jnp.int32), params=v["params"], batch_stats=v["batch_stats"],
            opt_state=jax.eval_shape(tx.init, v["params"]), method_state=mstate,
            ema=v["params"] if self.ema_decay > 0 else {},
        )

    def _shardings(self, index: int):
        return devices.state_shardings(self._shapes(index), self.mesh, bool(self.config.mesh.shard_params))

    def _abstract(self, index: int):
        return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                            self._shapes(index), self._shardings(index))

    def _put(self, tree, shardings):
        return jax.tree.map(lambda x, sh: jax.device_put(np.asarray(x), sh), tree, shardings)

    def initial_state(self) -> TrainState:
        """The freshly initialised train state of phase 0; with ``model.pretrained`` the backbone holds
        those weights, and the model's init hook (MiniLM encoder, GloVe rows) has run."""
        sh = self.state_shardings
        variables = jax.jit(lambda k: init_variables(self.model, k, self.example),
                            out_shardings={"params": sh.params, "batch_stats": sh.batch_stats})(self.init_rng)
        variables = self._run_init_hook(variables)
        if self.config.model.get("pretrained", "") and self.frozen is None:  # (frozen: already in the features)
            from ltjax.models import load_configured_pretrained

            # resnet*: a torchvision state dict; other models use their registered loader (efficientnet_lite0
            # also accepts the keyword "imagenet", glyphnet "glyphs")
            loaded = load_configured_pretrained(self.config.model, jax.device_get(variables))
            variables = {"params": jax.device_put(loaded["params"], sh.params),
                         "batch_stats": jax.device_put(loaded["batch_stats"], sh.batch_stats)}
        params = variables["params"]
        opt_state = jax.jit(self.tx.init, out_shardings=sh.opt_state)(params)
        ema = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=sh.params)(params) if self.ema_decay > 0 else {}
        return TrainState(
            step=jax.device_put(jnp.zeros((), jnp.int32), self.replicated), params=params,
            batch_stats=variables["batch_stats"], opt_state=opt_state,
            method_state=self._put(self.initial_method_state(), sh.method_state), ema=ema,
        )

    def _run_init_hook(self, variables):
        """``variables`` with what the model's ``ModelSpec.init_hook`` returns (it gets the host copies and
        ``self.dataset``, e.g. for the text vocabulary); its numbers go to ``self.init_info``."""
        from ltjax.models import MODELS

        self.init_info = {}
        hook = MODELS.get(self.config.model.name).init_hook
        if hook is None:
            return variables
        result = hook(self.config.model, jax.device_get(variables), self.dataset)
        if result is None:
            return variables
        loaded, self.init_info = result
        sh = self.state_shardings
        return {"params": jax.device_put(loaded["params"], sh.params),
                "batch_stats": jax.device_put(loaded["batch_stats"], sh.batch_stats)}

    def enter(self, index: int, state: TrainState) -> TrainState:
        """The state at the start of phase ``index`` (after phase ``index - 1`` ended): a training phase
        re-initialises its ``reinit`` parameters (and their EMA) and starts a fresh optimiser state."""
        plan = self.phases[index]
        if plan.kind != "train":
            return state
        sh = self._shardings(index)
        params = state.params
        ema = state.ema
        if plan.spec.reinit:
            fresh = jax.jit(lambda k: init_variables(self.model, k, self.example)["params"], out_shardings=sh.params)(
                jax.random.fold_in(self.init_rng, index))
            pick = path_mask(self.abstract_variables["params"], plan.spec.reinit, f"phase {plan.name!r} reinit")
            params = jax.tree.map(lambda keep, old, new: new if keep else old, pick, params, fresh)
            if self.ema_decay > 0:  # its own copy: a donated state must not hold one buffer twice
                ema = jax.tree.map(lambda keep, old, new: jnp.copy(new) if keep else old, pick, ema, fresh)
        opt_state = jax.jit(plan.tx.init, out_shardings=sh.opt_state)(params)
        return state.replace(params=params, opt_state=opt_state, ema=ema)

    def _raw_step(self, index: int):
        """The pure step of training phase ``index`` and its state shardings."""
        plan = self.phases[index]
        spec = plan.spec
        tags = [plan.tags[s] for s in plan.streams]
        feed = self.feed
        step = make_phase_step(
            self.model, spec.loss or self.method.loss, self.config.method, self.stats, plan.tx, self.dtype,
            streams=plan.streams, schedule=plan.schedule_fn, input_fn=lambda b, r, i: feed.train_inputs(b, r, tags[i]),
            update_state=spec.update_state, ema_decay=self.ema_decay, phase_start=plan.start,
            train_mode=spec.train_mode, loss_rng=spec.loss_rng,
        )
        return step, self._shardings(index)

    def phase_step(self, index: int):
        """The jitted ``(state, batches, rng) -> (state, metrics)`` of training phase ``index`` (built once);
        ``batches`` maps each of the phase's streams to its global batch."""
        if index not in self._steps:
            step, sh = self._raw_step(index)
            streams = self.phases[index].streams
            self._steps[index] = jax.jit(
                step,
                in_shardings=(sh, {s: self.feed.batch_shardings() for s in streams}, self.replicated),
                out_shardings=(sh, self.replicated),
                donate_argnums=0,
            )
        return self._steps[index]

    def collect(self, state: TrainState, split_name: str, collect) -> dict:
        """``collect(outputs, batch)`` (per-example arrays) over the whole split in order, gathered on the host
        (a pass's collect step; also ``scripts/probe_httn.py``'s embeddings)."""
        step = make_collect_step(self.model, collect, self.dtype)
        fn = jax.jit(lambda p, bs, batch: step(p, bs, self.feed.eval_inputs(batch), batch),
                     out_shardings=self.batch_sharding)
        outs, valid = [], []
        for batch in self.feed.eval_batches(split_name):
            outs.append(fn(state.params, state.batch_stats, batch))
            valid.append(batch["valid"])
        return gather_valid(outs, valid)

    def run_pass(self, index: int, state: TrainState) -> tuple[TrainState, dict]:
        """Phase ``index`` (a pass): collect over its split, then its host ``finish``; returns the new state
        (step counter advanced by one) and the info for the log."""
        plan = self.phases[index]
        spec = plan.spec
        sh = self._shardings(index)
        gathered = {}
        labels = None
        if spec.collect is not None:
            labels = np.asarray(self.dataset.split(spec.split).labels)
            gathered = self.collect(state, spec.split, spec.collect)
        elif spec.reduce is not None:
            split = self.dataset.split(spec.split)
            labels = np.asarray(split.labels)
            def reduce(p, bs, batch, ms):
                step = make_collect_step(self.model, lambda outputs, b: spec.reduce(
                    outputs, b["labels"].astype(jnp.float32), b["valid"].astype(jnp.float32), ms), self.dtype)
                return step(p, bs, self.feed.eval_inputs(batch), batch)

            fn = jax.jit(reduce, out_shardings=self.replicated)
            add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b), out_shardings=self.replicated)
            total = None
            for batch in self.feed.eval_batches(spec.split, with_labels=True):
                out = fn(state.params, state.batch_stats, batch, state.method_state)
                total = out if total is None else add(total, out)
            gathered = jax.tree.map(np.asarray, jax.device_get(total))
        host = jax.device_get({"params": state.params, "state": state.method_state})
        result = spec.finish(PassContext(gathered, labels, host["params"], host["state"], self.config, self.meta))
        params, mstate = state.params, state.method_state
        if result.params is not None:
            _check_same_tree(host["params"], result.params, f"pass {plan.name!r} params")
            params = self._put(result.params, sh.params)
        if result.state is not None:
            _check_same_tree(host["state"], result.state, f"pass {plan.name!r} method state")
            mstate = self._put(result.state, sh.method_state)
        step = jax.device_put(state.step + 1, self.replicated)
        return state.replace(step=step, params=params, method_state=mstate), dict(result.info)

    # -- checkpoints ---------------------------------------------------------------------------------

    def checkpoint_target(self, index: int = 0):
        """The abstract pytree a checkpoint of phase ``index`` restores into (train state and PRNG key data)."""
        return {"train": self._abstract(index), "rng": np.asarray(jax.random.key_data(self.train_rng))}

    def checkpoint_target_of(self, loop: dict):
        """The restore target of a checkpoint whose loop item is ``loop`` (its phase fixes the state's shape)."""
        return self.checkpoint_target(int(loop.get("phase", 0)))

    def restore(self, workdir: str, step: int | None = None):
        """(train state, step) from a workdir's checkpoint (the latest when step is None)."""
        ckpt = Checkpointer(workdir, 1, async_save=False, read_only=True)
        try:
            if step is None:
                step, restored, _ = ckpt.restore_newest(self.checkpoint_target_of)
                if step is None:
                    raise CheckpointError(
                        f"no checkpoint in {ckpt.directory}; train first: python -m ltjax.train --config ... "
                        f"--workdir {workdir}"
                    )
            else:
                restored, _ = ckpt.restore_checked(int(step), self.checkpoint_target_of)
        finally:
            ckpt.close()
        return restored["train"], int(step)

    def restore_selected(self, workdir: str):
        """(train state with the selected weights, step) of a run with ``train.select_on``, or None when the
        run has no selection record (``selection.json``, written when training ends)."""
        from ltjax.training.selection import BestWeights, read_record

        record = read_record(workdir)
        if record is None or record.get("best_step") is None:
            return None
        state, _ = self.restore(workdir)
        best = BestWeights(workdir)
        try:
            weights = best.restore(int(record["best_step"]), self._abstract(0))
        finally:
            best.close()
        return state.replace(**weights), int(record["best_step"]), record

    # -- data ----------------------------------------------------------------------------------------

    def global_batch(self, host_batch: dict) -> dict:
        """A process-local host batch from :meth:`train_iterator` -> the global batch ``train_step`` takes."""
        return self.feed.global_batch(host_batch)

    def train_iterator(self):
        """The first stream of the first training phase (what ``train_step`` takes)."""
        first = self.train_phase_of(0)
        s = first.streams[0]
        return self.feed.train_stream(first.samplers[s], first.length, first.tags[s])

    def predict(self, params, batch_stats, split_name: str, method_state=None):
        """Scores and labels for a whole split, gathered on every process (numpy)."""
        split = self.dataset.split(split_name)
        if method_state is None:
            method_state = self._put(self.initial_method_state(), jax.tree.map(lambda _: self.replicated,
                                                                               self.initial_method_state()))
        scores, valid = [], []
        for batch in self.feed.eval_batches(split_name):
            scores.append(self._eval(params, batch_stats, method_state, batch))
            valid.append(batch["valid"])
        return gather_valid(scores, valid), np.asarray(split.labels)


def _check_same_tree(old, new, what: str) -> None:
    a, b = jax.tree.structure(old), jax.tree.structure(new)
    if a != b:
        raise ValueError(f"{what}: the tree structure changed ({a} -> {b}); a pass must keep it")
    for x, y in zip(jax.tree.leaves(old), jax.tree.leaves(new)):
        if np.shape(x) != np.shape(y):
            raise ValueError(f"{what}: a leaf changed shape {np.shape(x)} -> {np.shape(y)}; a pass must keep shapes")
