"""The command lines end to end: train + evaluate, config errors, non-finite loss, kill -9 and resume."""
import json
import os
import struct
import time

import numpy as np
import pytest

from helpers import run_module, train_and_kill

TINY = "tests/configs/tiny_synthetic.py"


def _records(workdir, kind="train"):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    return [{k: v for k, v in r.items() if k != "examples_per_s"} for r in recs if r["kind"] == kind]


def _tensorboard_scalars(logdir):
    """Read the scalar events of a TensorBoard log (TFRecord framing + Event protos) without TensorFlow."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    for name in sorted(os.listdir(logdir)):
        with open(os.path.join(logdir, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                scalars.setdefault(v.tag, {})[event.step] = v.simple_value
    return scalars


def test_train_then_evaluate_through_the_cli(tmp_path):
    workdir = str(tmp_path / "run")
    r = run_module("ltjax.train", "--config", f"{TINY}:2", "--workdir", workdir, "--config.train.log_every=8")
    assert r.returncode == 0, r.stderr
    # the group table is printed
    assert "head" in r.stdout and "medium" in r.stdout and "tail" in r.stdout
    for name in ("config.json", "metrics.jsonl", "eval.json", "ap_vs_frequency.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["train"]["log_every"] == 8  # the resolved config, overrides included
    train = _records(workdir)
    assert [r["step"] for r in train] == [8, 16, 24, 32]
    tb = _tensorboard_scalars(os.path.join(workdir, "tensorboard"))
    assert sorted(tb["train/loss"]) == [8, 16, 24, 32]
    np.testing.assert_allclose(tb["train/loss"][32], train[-1]["loss"], rtol=1e-6)
    first = json.load(open(os.path.join(workdir, "eval.json")))
    assert 0.0 < first["mAP"] <= 1.0 and set(first["group_mAP"]) == {"head", "medium", "tail"}

    os.remove(os.path.join(workdir, "eval.json"))
    r = run_module("ltjax.evaluate", "--workdir", workdir)
    assert r.returncode == 0, r.stderr
    again = json.load(open(os.path.join(workdir, "eval.json")))
    assert again["mAP"] == first["mAP"] and again["group_mAP"] == first["group_mAP"]
    assert "head" in r.stdout


def test_config_mistakes_fail_fast_with_the_valid_fields(tmp_path):
    start = time.time()
    r = run_module("ltjax.train", "--config", TINY, "--workdir", str(tmp_path), "--config.optimizer.lrr=0.1")
    assert r.returncode == 2
    assert "optimizer.lrr" in r.stderr and "did you mean 'optimizer.lr'" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_module("ltjax.train", "--config", TINY, "--workdir", str(tmp_path), "--config.train.num_epochs=1.5")
    assert r.returncode == 2 and "train.num_epochs" in r.stderr
    r = run_module("ltjax.train", "--config", TINY, "--workdir", str(tmp_path), "--config.model.name=resnet5")
    assert r.returncode == 2 and "resnet50" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "config.json")  # nothing was started
    assert time.time() - start < 60


def test_non_finite_loss_stops_with_step_and_last_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    r = run_module(
        "ltjax.train", "--config", f"{TINY}:4", "--workdir", workdir,
        "--config.optimizer.name=sgd", "--config.optimizer.lr=1e12", "--config.optimizer.grad_clip_norm=0",
        "--config.schedule.warmup_steps=0", "--config.train.checkpoint_every=2",
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "non-finite loss" in r.stderr and "at step" in r.stderr
    assert "Last good checkpoint" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow  # ~30 s (the suite's time); kill -9 in the default suite: test_phases (inside a pass and a phase)
def test_kill_9_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    args = ["--config", f"{TINY}:50", "--config.train.checkpoint_every=30", "--config.train.log_every=10"]
    ref = str(tmp_path / "ref")
    r = run_module("ltjax.train", *args, "--workdir", ref)
    assert r.returncode == 0, r.stderr

    killed = str(tmp_path / "killed")
    train_and_kill(args, killed, 150)
    r = run_module("ltjax.train", *args, "--workdir", killed)
    assert r.returncode == 0, r.stderr
    assert "resumed from the checkpoint at step" in r.stdout

    assert _records(killed) == _records(ref)
    a = json.load(open(os.path.join(ref, "eval.json")))
    b = json.load(open(os.path.join(killed, "eval.json")))
    assert a["mAP"] == b["mAP"] and a["per_class"] == b["per_class"]

    from ltjax.config import load_saved_config
    from ltjax.training.loop import Experiment
    import chex

    exp = Experiment(load_saved_config(ref))
    sa, step_a = exp.restore(ref)
    sb, step_b = exp.restore(killed)
    assert step_a == step_b == exp.total_steps
    chex.assert_trees_all_equal(sa.params, sb.params)
    chex.assert_trees_all_equal(sa.opt_state, sb.opt_state)


def test_resuming_a_workdir_with_another_config_is_refused_but_run_settings_may_change(tmp_path):
    workdir = str(tmp_path / "run")
    r = run_module("ltjax.train", "--config", f"{TINY}:1", "--workdir", workdir)
    assert r.returncode == 0, r.stderr
    r = run_module("ltjax.train", "--config", f"{TINY}:1", "--workdir", workdir, "--config.optimizer.lr=0.5")
    assert r.returncode == 2 and "optimizer.lr" in r.stderr and "new --workdir" in r.stderr
    # the device layout and reader threads may change on resume (here: the run is already complete)
    r = run_module("ltjax.train", "--config", f"{TINY}:1", "--workdir", workdir,
                   "--config.mesh.data=4", "--config.data.read_threads=1")
    assert r.returncode == 0, r.stderr
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["mesh"]["data"] == 4
    # a run saved before a field existed (a later ltjax added it) resumes when the field keeps its default,
    # what the older code computed, and is refused when the user sets another value
    del saved["optimizer"]["nesterov"]
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(saved, f)
    r = run_module("ltjax.train", "--config", f"{TINY}:1", "--workdir", workdir, "--config.optimizer.nesterov=true")
    assert r.returncode == 2 and "optimizer.nesterov" in r.stderr
    r = run_module("ltjax.train", "--config", f"{TINY}:1", "--workdir", workdir)
    assert r.returncode == 0, r.stderr

