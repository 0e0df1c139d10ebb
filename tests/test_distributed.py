"""Multi-process training: 2 local CPU processes (jax.distributed + gloo collectives, 4 devices each)
reach the same parameters and metrics as 1 process with 8 devices."""
import json
import os
import socket
import subprocess
import sys

import chex
import numpy as np
import pytest

from helpers import REPO, run_module

TINY = "tests/configs/tiny_synthetic.py"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_two_processes(args, workdir):
    """``python -m ltjax.train ARGS --workdir WORKDIR`` as 2 jax.distributed processes of 4 CPU devices
    each; returns the processes and their (stdout, stderr)."""
    port = _free_port()
    procs = []
    for pid in range(2):
        env = dict(os.environ, PYTHONPATH=str(REPO), XLA_FLAGS="--xla_force_host_platform_device_count=4",
                   LTJAX_COORDINATOR=f"127.0.0.1:{port}", LTJAX_NUM_PROCESSES="2", LTJAX_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen([sys.executable, "-m", "ltjax.train", *args, "--workdir", workdir], cwd=REPO,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs, [p.communicate(timeout=300) for p in procs]


def _train_records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip() and '"train"' in line]


@pytest.mark.slow  # ~15 s each (the suite's time); 2 processes in the default suite: the pass test below
@pytest.mark.parametrize("multi_on_device", [False, True], ids=["host_pipeline", "on_device"])
def test_two_processes_match_one_process(tmp_path, multi_on_device):
    """With ``multi_on_device`` the 2 processes keep the split on their devices (data.on_device: each
    process places the replicated store on its 4 devices) and still match the 1-process host run."""
    args = ["--config", f"{TINY}:3", "--config.train.log_every=8", "--config.train.checkpoint_every=16"]
    single = str(tmp_path / "single")
    r = run_module("ltjax.train", *args, "--workdir", single,
                   env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert r.returncode == 0, r.stderr

    multi = str(tmp_path / "multi")
    procs, outs = _train_two_processes([*args, *(["--config.data.on_device=true"] if multi_on_device else [])], multi)
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "head" in outs[0][0]  # process 0 prints the table
    assert ("on_device: train store" in outs[0][0] + outs[0][1]) == multi_on_device

    a, b = _train_records(single), _train_records(multi)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    np.testing.assert_allclose([r["loss"] for r in a], [r["loss"] for r in b], rtol=1e-5)
    ea = json.load(open(os.path.join(single, "eval.json")))
    eb = json.load(open(os.path.join(multi, "eval.json")))
    np.testing.assert_allclose(ea["mAP"], eb["mAP"], atol=1e-5)

    from ltjax.config import load_saved_config
    from ltjax.training.loop import Experiment

    exp = Experiment(load_saved_config(single))
    sa, _ = exp.restore(single)
    sb, _ = exp.restore(multi)
    chex.assert_trees_all_close(sa.params, sb.params, atol=1e-5, rtol=1e-5)


def test_two_processes_match_one_process_through_a_pass(tmp_path):
    """ncm: a joint phase, then a pass over the training split whose class means (method state) every
    process computes from all processes' examples."""
    args = ["--config", "tests/configs/tiny_phased.py:ncm", "--config.train.log_every=8"]
    single = str(tmp_path / "single")
    r = run_module("ltjax.train", *args, "--workdir", single,
                   env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert r.returncode == 0, r.stderr
    multi = str(tmp_path / "multi")
    procs, outs = _train_two_processes(args, multi)
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]

    from ltjax.config import load_saved_config
    from ltjax.training.loop import Experiment

    exp = Experiment(load_saved_config(single))
    sa, _ = exp.restore(single)
    sb, _ = exp.restore(multi)
    means = np.asarray(sa.method_state["class_means"])
    assert np.abs(means).sum() > 0
    chex.assert_trees_all_close(sa.method_state, sb.method_state, atol=1e-5, rtol=1e-5)
    ea = json.load(open(os.path.join(single, "eval.json")))
    eb = json.load(open(os.path.join(multi, "eval.json")))
    np.testing.assert_allclose(ea["mAP"], eb["mAP"], atol=1e-5)
