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
    code, _, err = _cli("ltjax.train", "--config", TINY, "--workdir", str(tmp_path), "--config.optimizer.lrr=0.1")
    assert code == 2
    assert "optimizer.lrr" in err and "did you mean 'optimizer.lr'" in err
    code, _, err = _cli("ltjax.train", "--config", TINY, "--workdir", str(tmp_path), "--config.train.num_epochs=1.5")
    assert code == 2 and "train.num_epochs" in err
    code, _, err = _cli("ltjax.train", "--config", TINY, "--workdir", str(tmp_path), "--config.model.name=resnet5")
    assert code == 2 and "resnet50" in err
    assert not os.path.exists(tmp_path / "config.json")  # nothing was started
    assert time.time() - start < 60


def test_non_finite_loss_stops_with_step_and_last_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    code, _, err = _cli(
        "ltjax.train", "--config", f"{TINY}:4", "--workdir", workdir,
        "--config.optimizer.name=sgd", "--config.optimizer.lr=1e12", "--config.optimizer.grad_clip_norm=0",
        "--config.schedule.warmup_steps=0", "--config.train.checkpoint_every=2",
    )
    assert code == 1, err
    assert "non-finite loss" in err and "at step" in err
    assert "Last good checkpoint" in err


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
    code, _, err = _cli("ltjax.train", "--config", f"{TINY}:1", "--workdir", workdir)
    assert code == 0, err
    code, _, err = _cli("ltjax.train", "--config", f"{TINY}:1", "--workdir", workdir, "--config.optimizer.lr=0.5")
    assert code == 2 and "optimizer.lr" in err and "new --workdir" in err
    # the device layout and reader threads may change on resume (here: the run is already complete)
    code, _, err = _cli("ltjax.train", "--config", f"{TINY}:1", "--workdir", workdir,
                        "--config.mesh.data=4", "--config.data.read_threads=1")
    assert code == 0, err
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["mesh"]["data"] == 4
    # a run saved before a field existed (a later ltjax added it) resumes when the field keeps its default,
    # what the older code computed, and is refused when the user sets another value
    del saved["optimizer"]["nesterov"]
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(saved, f)
    code, _, err = _cli("ltjax.train", "--config", f"{TINY}:1", "--workdir", workdir,
                        "--config.optimizer.nesterov=true")
    assert code == 2 and "optimizer.nesterov" in err


# ---- user mistakes and interruptions (issue 18): exit 2, one paragraph, no traceback, nothing lost --------


def _cli(module, *argv, env=None):
    """``python -m module argv`` in this process: (exit code, stdout, stderr)."""
    import contextlib
    import importlib
    import io

    from ltjax.config import run_cli

    main = importlib.import_module(module).main
    out, err = io.StringIO(), io.StringIO()
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = run_cli(main, list(argv))
            except SystemExit as e:
                code = e.code
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert "Traceback" not in err.getvalue()
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli") / "run"
    code, _, err = _cli("ltjax.train", "--config", f"{TINY}:1", "--workdir", str(workdir))
    assert code == 0, err
    return workdir


@pytest.mark.parametrize("spec, words", [
    ("configs/yeast.py:nosuch", ["'nosuch'", "unknown method", "registered methods"]),
    ("configs/bce_yeast.py:abc", ["'abc'", "whole number", "arg: an optional seed"]),
    ("configs/synthetic_lt.py:bce,huge", ["'bce,huge'", "unknown size preset 'huge'", "arg: ``METHOD[,SIZE]``"]),
])
def test_a_config_argument_the_file_rejects_is_named_with_the_files_own_help(tmp_path, spec, words):
    code, _, err = _cli("ltjax.train", "--config", spec, "--workdir", str(tmp_path / "w"))
    assert code == 2 and all(w in err for w in words), err
    assert not (tmp_path / "w").exists()


def test_evaluate_step_mistakes_list_what_exists(tiny_run):
    before = sorted(os.listdir(tiny_run / "checkpoints"))
    code, _, err = _cli("ltjax.evaluate", "--workdir", str(tiny_run), "--step", "abc")
    assert code == 2 and "--step 'abc' is not a checkpoint step" in err
    code, _, err = _cli("ltjax.evaluate", "--workdir", str(tiny_run), "--step", "12345")
    assert code == 2 and "no checkpoint of step 12345" in err and "8, 16" in err
    assert sorted(os.listdir(tiny_run / "checkpoints")) == before


def test_eval_fields_and_batch_are_checked_before_anything_is_written(tmp_path, tiny_run):
    w = tmp_path / "w"
    cases = [
        (["--config.eval.split=bogus"], ["eval.split = 'bogus'", "its splits: train, test"]),
        (["--config.eval.top_k=(1, 20)"], ["eval.top_k = (1, 20)", "12 classes", "--config.eval.top_k"]),
        (["--config.data.batch_size=12"], ["data.batch_size=12", "8 devices", "--config.data.batch_size=8"]),
    ]
    for flags, words in cases:
        code, _, err = _cli("ltjax.train", "--config", TINY, "--workdir", str(w), *flags)
        assert code == 2 and all(x in err for x in words), err
        assert not os.path.exists(w / "config.json") and not os.path.exists(w / "checkpoints")
    mtime = os.path.getmtime(tiny_run / "eval.json")
    code, _, err = _cli("ltjax.evaluate", "--workdir", str(tiny_run), "--config.eval.split=bogus")
    assert code == 2 and "eval.split = 'bogus'" in err and os.path.getmtime(tiny_run / "eval.json") == mtime


def test_the_default_top_k_keeps_the_k_a_small_dataset_has(tmp_path):
    code, out, err = _cli("ltjax.train", "--config", f"{TINY}:1", "--workdir", str(tmp_path / "w"),
                          "--config.data.num_classes=4")
    assert code == 0, err
    assert "eval.top_k is (1, 3)" in out
    assert json.load(open(tmp_path / "w" / "eval.json"))["top_k"] == [1, 3]


def test_unusable_workdirs_and_a_missing_checkpoint(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("keep me")
    code, _, err = _cli("ltjax.train", "--config", TINY, "--workdir", str(f))
    assert code == 2 and "is a file, not a folder" in err and f.read_text() == "keep me"
    if os.geteuid() == 0:
        code, _, err = _cli("ltjax.train", "--config", TINY, "--workdir", "/sys/ltjax_run")
        assert code == 2 and "cannot be written" in err
    empty = tmp_path / "empty"
    code, _, err = _cli("ltjax.train", "--config", TINY, "--workdir", str(empty), "--config.train.num_epochs=0")
    assert code == 2
    from ltjax.config import save_config
    from helpers import small_synthetic_config

    save_config(small_synthetic_config(), str(empty))
    r = run_module("ltjax.evaluate", "--workdir", str(empty))  # a process: orbax's threads end with it
    assert r.returncode == 2 and "no checkpoint in" in r.stderr and "train first" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_evaluate_into_an_unwritable_folder_says_to_pass_out(tiny_run):
    target = "/sys/ltjax_eval" if os.geteuid() == 0 else "/proc/ltjax_eval"
    code, _, err = _cli("ltjax.evaluate", "--workdir", str(tiny_run), "--out", target)
    assert code == 2 and "cannot be written" in err and "pass --out DIR" in err


def test_ltjax_debug_shows_the_traceback_of_a_user_mistake(tmp_path):
    from ltjax.config import ConfigError, run_cli
    from ltjax.train import main

    os.environ["LTJAX_DEBUG"] = "1"
    try:
        with pytest.raises(ValueError, match="invalid literal for int"):  # the config file's own exception
            run_cli(main, ["--config", "configs/bce_yeast.py:abc", "--workdir", str(tmp_path)])
        with pytest.raises(ConfigError, match="optimizer.lrr"):
            run_cli(main, ["--config", TINY, "--workdir", str(tmp_path), "--config.optimizer.lrr=1"])
    finally:
        del os.environ["LTJAX_DEBUG"]


def test_an_unwritable_cache_is_named(tmp_path, capsys):
    from ltjax import assets
    from ltjax.errors import CacheDirError
    from ltjax.training import devices

    bad = "/proc/ltjax_cache"  # nobody, root included, can create anything there
    os.environ["LTJAX_CACHE_DIR"] = bad
    saved = os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    try:
        devices.enable_compilation_cache()  # an optimisation: a warning, and the run goes on
        assert "LTJAX_CACHE_DIR" in capsys.readouterr().err
        with pytest.raises(CacheDirError, match="LTJAX_CACHE_DIR=/proc/ltjax_cache"):
            assets.make_cache_folder(assets.cache_dir() / "tiles_voc_lt")
    finally:
        del os.environ["LTJAX_CACHE_DIR"]
        if saved is not None:
            os.environ["JAX_COMPILATION_CACHE_DIR"] = saved


def test_a_start_that_failed_before_its_first_checkpoint_leaves_the_workdir_to_the_fix(tmp_path):
    w = str(tmp_path / "w")
    code, _, err = _cli("ltjax.train", "--config", f"{TINY}:1", "--workdir", w, "--config.optimizer.name=sgd",
                        "--config.optimizer.lr=1e12", "--config.optimizer.grad_clip_norm=0",
                        "--config.schedule.warmup_steps=0")
    assert code == 1 and "Lower optimizer.lr" in err
    code, out, err = _cli("ltjax.train", "--config", f"{TINY}:1", "--workdir", w)  # the fix, same workdir
    assert code == 0, err
    assert "stopped before its first checkpoint" in out
    assert json.load(open(os.path.join(w, "config.json")))["optimizer"]["lr"] == 1e-2
    assert [r["step"] for r in _records(w)] == [4, 8, 12, 16]  # the failed start's rows are gone


def test_ctrl_c_checkpoints_the_current_step_and_the_same_command_resumes_it(tmp_path):
    import re
    import signal
    import subprocess
    import sys

    from helpers import REPO

    # 24 epochs (384 steps, a few seconds): long enough that the run is still training when the signal lands
    args = ["--config", f"{TINY}:24", "--config.train.checkpoint_every=1000", "--config.train.log_every=16"]
    ref = str(tmp_path / "ref")
    code, _, err = _cli("ltjax.train", *args, "--workdir", ref)
    assert code == 0, err
    w = tmp_path / "w"
    p = subprocess.Popen([sys.executable, "-m", "ltjax.train", *args, "--workdir", str(w)], cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 240
    log = w / "metrics.jsonl"
    while time.time() < deadline and not (log.exists() and log.read_text()):
        time.sleep(0.05)  # training has started (a logged row)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (p.returncode, out[-2000:], err[-2000:])
    assert "Traceback" not in err and "Run the same command again to resume" in err
    step = int(re.search(r"saved a checkpoint of step (\d+)", err).group(1))
    assert 0 < step < 384  # (checkpoint_every 1000: the only checkpoints are epoch ends and this one)
    code, out, err = _cli("ltjax.train", *args, "--workdir", str(w))
    assert code == 0 and f"resumed from the checkpoint at step {step}" in out
    assert _records(str(w)) == _records(ref)  # metrics.jsonl line for line (bar the wall-clock speed)
    a, b = (json.load(open(os.path.join(d, "eval.json"))) for d in (ref, w))
    assert a["per_class"] == b["per_class"]
