"""The method framework (ltjax/training/phases.py, experiment.py, loop.py): phases, passes, method state,
several streams per step, EMA, checkpoints at phase boundaries, kill -9 inside a phase and inside a pass."""
import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

import phased_toy
from helpers import REPO
from ltjax.data.sampling import ReverseSampler, UniformSampler
from ltjax.errors import ConfigError
from ltjax.training.loop import Experiment, train_and_evaluate
from ltjax.training.phases import stream_seed


def _state_host(state):
    return jax.device_get({"params": state.params, "method_state": state.method_state, "ema": state.ema})


def test_phase_plan_lengths_samplers_and_optimiser_overrides():
    exp = Experiment(phased_toy.config(**{"mesh.data": 1}))
    warm, means, head = exp.phases
    spe = exp.steps_per_epoch
    assert (warm.start, warm.length, means.start, means.length, head.start) == (0, spe, spe, 1, spe + 1)
    assert exp.total_steps == head.end == spe + 1 + head.length
    assert isinstance(head.samplers["main"], UniformSampler) and isinstance(head.samplers["tail"], ReverseSampler)
    assert head.samplers["tail"].seed == stream_seed(exp.config.seed, 2, 1) != exp.config.seed
    assert warm.samplers["main"].seed == exp.config.seed  # the first stream of the first phase: the run's order
    assert head.optimizer.lr == 0.005 and warm.optimizer.lr == exp.config.optimizer.lr
    assert exp.config.optimizer.lr != 0.005


@pytest.mark.parametrize("path,value,match", [
    ("method.phases.head.optimizer", {"learning_rate": 0.1}, r"learning_rate is not a field .*valid fields: .*lr"),
    ("method.phases.head.streams", {"side": "uniform"}, r"streams names \['side'\]"),
    ("method.phases.head.streams", {"tail": "upside_down"}, r"unknown sampler 'upside_down'.*reverse"),
])
def test_phase_config_mistakes_are_clear_errors(path, value, match):
    import ml_collections

    c = phased_toy.config(**{"mesh.data": 1})
    node = c
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = ml_collections.ConfigDict(value)
    with pytest.raises(ConfigError, match=match):
        Experiment(c)


def test_unknown_phase_block_is_an_error():
    c = phased_toy.config(**{"mesh.data": 1})
    c.method.phases.finetune = c.method.phases.warm
    with pytest.raises(ConfigError, match=r"finetune.*toy_phased.*phase blocks: head, means, warm"):
        Experiment(c)


def test_each_stream_yields_exactly_what_its_sampler_alone_yields():
    c = phased_toy.config(**{"mesh.data": 1, "data.on_device": True})  # the index pipeline shows example ids
    exp = Experiment(c)
    head = exp.phases[2]
    labels = exp.dataset.split("train").labels
    batch = int(c.data.batch_size)
    for j, (name, cls) in enumerate([("main", UniformSampler), ("tail", ReverseSampler)]):
        alone = cls(labels, stream_seed(c.seed, 2, j)) if cls is ReverseSampler else cls(len(labels), stream_seed(c.seed, 2, j))
        it = exp.feed.train_stream(head.samplers[name], head.length, head.tags[name])
        for k in range(3):
            got = next(it)["index"]
            np.testing.assert_array_equal(got, alone.indices(np.arange(k * batch, (k + 1) * batch)))
    assert head.tags["main"] != head.tags["tail"] != 0  # own augmentation keys


def _phase_steps(exp, state, index, n):
    plan = exp.phases[index]
    its = {s: exp.feed.train_stream(plan.samplers[s], plan.length, plan.tags[s]) for s in plan.streams}
    step = exp.phase_step(index)
    trajectory = []
    for _ in range(n):
        state, m = step(state, {s: exp.feed.global_batch(next(it)) for s, it in its.items()}, exp.train_rng)
        trajectory.append(jax.device_get(state.params))
    return state, trajectory


def test_ema_equals_a_numpy_ema_of_the_parameter_trajectory():
    exp = Experiment(phased_toy.config(**{"mesh.data": 1, "train.ema_decay": 0.8}))
    state = exp.initial_state()
    ema = jax.tree.map(np.asarray, jax.device_get(state.params))
    state, trajectory = _phase_steps(exp, state, 0, 6)
    for p in trajectory:
        ema = jax.tree.map(lambda e, x: 0.8 * e + 0.2 * np.asarray(x), ema, p)
    chex.assert_trees_all_close(jax.device_get(state.ema), ema, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ema["head"]["fc"]["kernel"], trajectory[-1]["head"]["fc"]["kernel"])


def test_update_state_runs_in_the_step_and_frozen_parameters_stay_bit_identical():
    exp = Experiment(phased_toy.config(**{"mesh.data": 8}))
    state = exp.initial_state()
    state, _ = _phase_steps(exp, state, 0, 3)
    ms = jax.device_get(state.method_state)
    assert int(ms["seen"]) == 3 and 0 < ms["running_p"].min() and ms["running_p"].max() < 1
    before = jax.device_get(state.params)
    state = exp.enter(2, state)  # the head phase: head re-initialised, everything else frozen
    fresh = jax.device_get(jax.jit(lambda k: exp.model.init({"params": k, "dropout": k, "noise": k, "sample": k},
                                                            exp.example, train=False)["params"])(
        jax.random.fold_in(exp.init_rng, 2)))
    chex.assert_trees_all_equal(jax.device_get(state.params["head"]), fresh["head"])
    state, _ = _phase_steps(exp, state, 2, 4)
    after = jax.device_get(state.params)
    chex.assert_trees_all_equal(after["backbone"], before["backbone"])
    assert not np.array_equal(after["head"]["fc"]["kernel"], fresh["head"]["fc"]["kernel"])
    assert int(jax.device_get(state.method_state["seen"])) == 3  # the head phase has no update_state


def test_a_pass_on_eight_devices_equals_one_device():
    results = []
    for n in (1, 8):
        exp = Experiment(phased_toy.config(**{"mesh.data": n}))
        state = exp.initial_state()
        state, info = exp.run_pass(1, state)
        assert info["examples"] == 512 and int(state.step) == 1
        results.append(jax.device_get(state.method_state["class_means"]))
    labels = exp.dataset.split("train").labels
    assert results[0].shape == (labels.shape[1], 32) and np.abs(results[0]).sum() > 0
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-6)


def _class_sums(outputs, labels, valid, state):
    y = labels * valid[:, None]
    return {"sums": y.T @ outputs["features"].astype(jax.numpy.float32), "counts": y.sum(axis=0)}


@pytest.mark.parametrize("over", [{"mesh.data": 1}, {"mesh.data": 8}, {"mesh.data": 8, "data.on_device": True}])
def test_a_reducing_pass_sums_over_the_split_like_a_gathering_pass(over):
    """PassPhase.reduce: per-batch sums with labels, added over the batches on the devices; the class means
    from the totals equal the gathering pass's, with padding excluded, sharded or not, host or device data."""
    from ltjax.methods import PassPhase, PassResult

    exp = Experiment(phased_toy.config(**{"data.eval_batch_size": 48, **over}))  # 512 = 10 x 48 + 32: padding
    state = exp.initial_state()
    want, _ = exp.run_pass(1, state)  # the gathering pass
    seen = {}

    def finish(ctx):
        seen.update(ctx.gathered)
        means = ctx.gathered["sums"] / np.maximum(ctx.gathered["counts"], 1)[:, None]
        return PassResult(state={**ctx.state, "class_means": means.astype(np.float32)})

    exp.phases[1].spec = PassPhase("means", finish=finish, reduce=_class_sums)
    got, _ = exp.run_pass(1, exp.initial_state())
    labels = exp.dataset.split("train").labels
    np.testing.assert_array_equal(seen["counts"], labels.sum(axis=0))
    np.testing.assert_allclose(jax.device_get(got.method_state["class_means"]),
                               jax.device_get(want.method_state["class_means"]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not both"):
        PassPhase("x", finish=finish, reduce=_class_sums, collect=lambda o, b: o)


def test_a_phase_loss_with_loss_rng_gets_its_own_key_per_step():
    from ltjax.methods import TrainPhase
    from ltjax.methods.base import LOSS_RNG_TAG
    from ltjax.training.step import RNG_STREAMS

    exp = Experiment(phased_toy.config(**{"mesh.data": 1}))
    draws = []

    def loss(outputs, batch, stats, method_cfg, state=None, rng=None):
        value, aux = phased_toy._bce(outputs, batch, stats, method_cfg)
        return value, {"draw": jax.random.uniform(rng)}

    exp.phases[0].spec = TrainPhase("warm", loss=loss, loss_rng=True)
    plan = exp.phases[0]
    it = exp.feed.train_stream(plan.samplers["main"], plan.length, plan.tags["main"])
    state = exp.initial_state()
    step = exp.phase_step(0)
    for k in range(2):
        state, m = step(state, {"main": exp.feed.global_batch(next(it))}, exp.train_rng)
        keys = dict(zip(RNG_STREAMS, jax.random.split(jax.random.fold_in(exp.train_rng, k), len(RNG_STREAMS))))
        want = jax.random.uniform(jax.random.fold_in(keys["sample"], LOSS_RNG_TAG))
        assert float(m["draw"]) == float(want)
        draws.append(float(m["draw"]))
    assert draws[0] != draws[1]


def test_a_pass_that_changes_the_tree_is_refused():
    from ltjax.methods import PassResult

    exp = Experiment(phased_toy.config(**{"mesh.data": 1}))
    spec = exp.phases[1].spec
    exp.phases[1].spec = type(spec)(spec.name, finish=lambda ctx: PassResult(state={"other": np.zeros(3)}),
                                    collect=spec.collect)
    with pytest.raises(ValueError, match="tree structure changed"):
        exp.run_pass(1, exp.initial_state())


def test_whole_run_compiles_each_phase_step_once_and_state_survives_restore_and_sharding(tmp_path, monkeypatch):
    import ltjax.training.experiment as experiment

    original = experiment.make_phase_step
    traces = []  # one counter per built phase step; the Python body runs only when jit traces it

    def counting(*a, **k):
        fn = original(*a, **k)
        traces.append(0)
        slot = len(traces) - 1

        def traced(state, batches, rng):
            traces[slot] += 1
            return fn(state, batches, rng)

        return traced

    monkeypatch.setattr(experiment, "make_phase_step", counting)
    runs = {}
    for n in (8, 1):
        c = phased_toy.config(**{"mesh.data": n, "train.ema_decay": 0.9, "train.checkpoint_every": 5})
        result = train_and_evaluate(c, str(tmp_path / f"d{n}"))
        exp = Experiment(c)
        state, step = exp.restore(str(tmp_path / f"d{n}"))
        assert step == exp.total_steps
        runs[n] = (result, _state_host(state))
    assert max(traces) == 1 and sum(traces) == 4  # two training phases per run, each traced (compiled) once
    (r8, s8), (r1, s1) = runs[8], runs[1]
    assert s8["method_state"]["seen"] == s1["method_state"]["seen"] == exp.phases[0].length
    chex.assert_trees_all_close(s8, s1, rtol=2e-4, atol=2e-5)
    assert r8["weights"] == "ema" and "raw" in r8 and abs(r8["mAP"] - r1["mAP"]) < 1e-3
    recs = [json.loads(line) for line in open(tmp_path / "d8" / "metrics.jsonl")]
    phases = json.load(open(tmp_path / "d8" / "phases.json"))
    assert [(p["name"], p["kind"], p["steps"]) for p in phases] == [
        ("warm", "train", 16), ("means", "pass", 1), ("head", "train", 16)]
    assert {r.get("phase") for r in recs if r["kind"] == "train"} == {"warm", "head"}
    assert [r["phase"] for r in recs if r["kind"] == "pass"] == ["means"]
    assert "loss_tail" not in recs[-1]


_KILL_SCRIPT = r"""
import os, signal, sys
sys.path.insert(0, {tests!r})
import phased_toy
import ltjax.training.checkpoint as ck
mode, at = sys.argv[1], int(sys.argv[2])
orig_finish = phased_toy._means
def finish(ctx):  # "pass": die inside the pass, after its data went through the model
    if mode == "pass":
        os.kill(os.getpid(), signal.SIGKILL)
    return orig_finish(ctx)
phased_toy._means = finish
orig_save = ck.Checkpointer.save
def save(self, step, state, loop):
    orig_save(self, step, state, loop)
    if mode == "step" and step == at:
        self.wait()
        os.kill(os.getpid(), signal.SIGKILL)
ck.Checkpointer.save = save
from ltjax.config import run_cli
from ltjax.train import main
sys.exit(run_cli(main, sys.argv[3:]))
"""


def test_kill_9_inside_a_pass_and_inside_a_later_phase_then_resume_is_bit_identical(tmp_path):
    tests = str(REPO / "tests")
    script = tmp_path / "killer.py"
    script.write_text(_KILL_SCRIPT.format(tests=tests))
    cfg = tmp_path / "toy_cfg.py"
    cfg.write_text(
        "import sys\nsys.path.insert(0, %r)\nimport phased_toy\n\n\ndef get_config(arg=None):\n"
        "    c = phased_toy.config(**{'train.checkpoint_every': 4, 'train.log_every': 4})\n"
        "    c.train.ema_decay = 0.9\n    return c\n" % tests
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + tests)

    def launch(workdir, mode="none", at=0):
        return subprocess.run([sys.executable, str(script), mode, str(at), "--config", str(cfg), "--workdir", workdir],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    ref = str(tmp_path / "ref")  # the uninterrupted run, in this process (the same 8 CPU devices)
    overrides = {"train.checkpoint_every": 4, "train.log_every": 4, "train.ema_decay": 0.9}
    train_and_evaluate(phased_toy.config(**overrides), ref)
    killed = str(tmp_path / "killed")
    r = launch(killed, "pass")
    assert r.returncode == -9, r.stderr[-3000:]
    assert not os.path.exists(os.path.join(killed, "eval.json"))
    exp = Experiment(phased_toy.config(**overrides))
    head = exp.phases[2]
    at = (head.start // 4 + 2) * 4  # a periodic checkpoint inside "head"
    assert head.start < at < head.end
    r = launch(killed, "step", at)  # resumes at the boundary, redoes the pass, dies inside "head"
    assert r.returncode == -9 and f"resumed from the checkpoint at step {exp.phases[0].end}" in r.stdout, r.stderr[-3000:]
    r = launch(killed)
    assert r.returncode == 0 and f"resumed from the checkpoint at step {at}" in r.stdout, r.stderr[-3000:]

    sa, step_a = exp.restore(ref)
    sb, step_b = exp.restore(killed)
    assert step_a == step_b == exp.total_steps
    chex.assert_trees_all_equal(_state_host(sa), _state_host(sb))
    chex.assert_trees_all_equal(jax.device_get(sa.opt_state), jax.device_get(sb.opt_state))
    a = json.load(open(os.path.join(ref, "eval.json")))
    b = json.load(open(os.path.join(killed, "eval.json")))
    assert a["mAP"] == b["mAP"] and a["per_class"] == b["per_class"] and a["raw"]["mAP"] == b["raw"]["mAP"]

    def records(w):
        return [{k: v for k, v in json.loads(line).items() if k not in ("examples_per_s", "seconds")}
                for line in open(os.path.join(w, "metrics.jsonl")) if line.strip()]

    assert records(ref) == records(killed)
