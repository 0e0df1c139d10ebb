"""ltjax.training.workdir: usable workdirs, the one-run-per-workdir lock (stale-safe), and which configs may
resume or restart a workdir; two training processes started together into one workdir."""
import json
import os
import signal
import subprocess
import sys

import pytest

from helpers import REPO, small_synthetic_config

from ltjax.errors import ConfigError, WorkdirError
from ltjax.training.workdir import LOCK_FILE, WorkdirLock, check_same_run, check_usable

_HOLD = ("import sys, time; sys.path.insert(0, sys.argv[1]); from ltjax.training.workdir import WorkdirLock; "
         "WorkdirLock(sys.argv[2]).acquire(); print('held', flush=True); time.sleep(600)")


def _holder(workdir):
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(REPO), str(workdir)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_held_workdir_is_refused_with_the_holders_pid_and_host_and_freed_by_kill_9(tmp_path):
    import socket

    p = _holder(tmp_path)
    try:
        with pytest.raises(WorkdirError) as e:
            WorkdirLock(str(tmp_path)).acquire()
        assert f"process {p.pid} on host {socket.gethostname()}" in str(e.value) and "another --workdir" in str(e.value)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with WorkdirLock(str(tmp_path)):  # the kernel released the dead holder's lock: no stale lock
        info = json.loads((tmp_path / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid()


def test_check_usable_names_a_file_and_an_unwritable_folder(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(WorkdirError, match="is a file, not a folder"):
        check_usable(str(f))
    check_usable(str(tmp_path / "new" / "run"))
    assert (tmp_path / "new" / "run").is_dir()
    # a folder nobody may create in (root ignores modes; /sys refuses even root)
    target = "/sys/ltjax_run" if os.geteuid() == 0 else str(tmp_path / "ro" / "run")
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir()
        os.chmod(tmp_path / "ro", 0o555)
    with pytest.raises(WorkdirError, match="cannot be written"):
        check_usable(target, hint="pass --out DIR")


def test_a_workdir_without_checkpoints_takes_a_new_config_one_with_them_does_not(tmp_path):
    from ltjax.config import save_config

    a = small_synthetic_config()
    b = small_synthetic_config(**{"optimizer.lr": 0.5})
    assert check_same_run(a, str(tmp_path)) is False  # nothing there yet
    save_config(a, str(tmp_path))
    assert check_same_run(b, str(tmp_path)) is True  # the earlier start never checkpointed: b starts afresh
    (tmp_path / "checkpoints" / "8").mkdir(parents=True)
    assert check_same_run(a, str(tmp_path)) is False
    with pytest.raises(ConfigError, match="optimizer.lr"):
        check_same_run(b, str(tmp_path))


def test_two_runs_started_together_one_finishes_as_alone_the_other_stops_at_once(tmp_path):
    import chex
    import jax

    from ltjax.config import load_saved_config
    from ltjax.training.loop import Experiment, train_and_evaluate

    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "ltjax.train", "--config", "tests/configs/tiny_synthetic.py:2",
           "--workdir", str(tmp_path / "both")]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    err = next(e for (o, e), p in zip(outs, procs) if p.returncode == 2)
    assert "is in use by process" in err and "Traceback" not in err

    ref = tmp_path / "ref"
    cfg = load_saved_config(str(tmp_path / "both"))
    train_and_evaluate(cfg, str(ref))
    exp = Experiment(cfg)
    chex.assert_trees_all_equal(jax.device_get(exp.restore(str(ref))[0].params),
                                jax.device_get(exp.restore(str(tmp_path / "both"))[0].params))
    rows = [(tmp_path / w / "metrics.jsonl").read_text().splitlines() for w in ("both", "ref")]
    strip = [[{k: v for k, v in json.loads(r).items() if k != "examples_per_s"} for r in rs] for rs in rows]
    assert strip[0] == strip[1] and len(strip[0]) >= 8  # every row of the run that ran, none lost
