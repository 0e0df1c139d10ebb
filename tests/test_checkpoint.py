"""ltjax.training.checkpoint: seals (checksums) on every saved step, and restores that skip a damaged step for
the newest intact one (train and evaluate), move it aside, and never lose anything."""
import json
import os
import pathlib
import shutil

import chex
import jax
import pytest

from helpers import small_synthetic_config

from ltjax.errors import CheckpointError
from ltjax.training.checkpoint import CHECKSUMS, DAMAGED_DIR, inspect_step, seal

# ---- seals on a plain folder -------------------------------------------------------------------------


def _folder(tmp_path):
    d = tmp_path / "7"
    (d / "state" / "d").mkdir(parents=True)
    (d / "state" / "d" / "blob").write_bytes(os.urandom(4096))
    (d / "state" / "_METADATA").write_text("{}")
    (d / "state" / "manifest.ocdbt").write_bytes(os.urandom(120))
    (d / "loop").mkdir()
    (d / "loop" / "metadata").write_text('{"phase": 0}')
    return d


def test_seal_and_inspect_name_what_changed(tmp_path):
    d = _folder(tmp_path)
    assert inspect_step(str(d))[0] == "unverified"
    seal(str(d))
    assert inspect_step(str(d)) == ("intact", "")
    saved = json.loads((d / CHECKSUMS).read_text())["files"]
    assert set(saved) == {os.path.join("state", "d", "blob"), os.path.join("state", "_METADATA"),
                          os.path.join("state", "manifest.ocdbt"), os.path.join("loop", "metadata")}

    blob = d / "state" / "d" / "blob"
    data = bytearray(blob.read_bytes())
    data[2000:2064] = bytes((b + 1) % 256 for b in data[2000:2064])  # same size, other bytes
    blob.write_bytes(bytes(data))
    status, reason = inspect_step(str(d))
    assert status == "damaged" and "state/d/blob changed" in reason

    blob.write_bytes(bytes(data[:100]))
    assert "has 100 bytes, 4096 when saved" in inspect_step(str(d))[1]
    blob.unlink()
    assert "state/d/blob is missing" in inspect_step(str(d))[1]
    seal(str(d))
    (d / "stray").write_text("x")
    assert "stray was not part of the checkpoint" in inspect_step(str(d))[1]
    (d / CHECKSUMS).write_text("{not json")
    assert "checksum file is unreadable" in inspect_step(str(d))[1]

    empty = tmp_path / "8"
    empty.mkdir()
    assert inspect_step(str(empty)) == ("damaged", "the step folder is empty")


# ---- a real run's checkpoints -------------------------------------------------------------------------


def _config(epochs=2):
    return small_synthetic_config(**{"train.num_epochs": epochs, "train.keep_checkpoints": 10})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (checkpoints at steps 8, 16, 24, 32), and the state at step 24."""
    from ltjax.training.loop import Experiment, train_and_evaluate

    w = tmp_path_factory.mktemp("ckpt") / "run"
    train_and_evaluate(_config(), str(w))
    exp = Experiment(_config())
    state24, _ = exp.restore(str(w), 24)
    return w, exp, jax.device_get(state24)


def _newest(w):
    ck = pathlib.Path(w) / "checkpoints"
    return ck / str(max(int(s) for s in os.listdir(ck) if s.isdigit()))


def _biggest(step_dir):
    """The step's biggest array data file (in OCDBT's d/ folders)."""
    return max((f for f in step_dir.rglob("*") if f.is_file() and f.parent.name == "d"), key=lambda f: f.stat().st_size)


def _flip(f):
    data = bytearray(f.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes((b + 1) % 256 for b in data[mid:mid + 64])
    f.write_bytes(bytes(data))


DAMAGE = {
    "flipped_bytes": lambda d: _flip(_biggest(d)),
    "truncated": lambda d: _biggest(d).write_bytes(_biggest(d).read_bytes()[: _biggest(d).stat().st_size // 2]),
    "deleted_file": lambda d: _biggest(d).unlink(),
    "deleted_metadata": lambda d: (d / "state" / "_METADATA").unlink(),
    "empty_manifest": lambda d: (d / "state" / "manifest.ocdbt").write_bytes(b""),
    "garbage_loop": lambda d: (d / "loop" / "metadata").write_bytes(b"\x00{garbage"),
    "empty_step": lambda d: (shutil.rmtree(d), d.mkdir()),
}


def test_every_saved_step_is_sealed_and_intact(trained):
    w, _, _ = trained
    steps = sorted(int(s) for s in os.listdir(w / "checkpoints") if s.isdigit())
    assert steps == [8, 16, 24, 32]
    for s in steps:
        assert inspect_step(str(w / "checkpoints" / str(s))) == ("intact", "")


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_evaluate_falls_back_to_the_newest_intact_step(trained, tmp_path, capsys, damage):
    w, exp, state24 = trained
    copy = tmp_path / "run"
    shutil.copytree(w, copy)
    DAMAGE[damage](_newest(copy))
    state, step = exp.restore(str(copy))
    assert step == 24
    chex.assert_trees_all_equal(jax.device_get(state.params), state24.params)
    err = capsys.readouterr().err
    assert "checkpoint step 32" in err and "is damaged" in err and "using checkpoint step 24" in err
    moved = copy / DAMAGED_DIR / "32"
    assert moved.is_dir() and (moved / "REASON.txt").exists()  # set aside, not deleted
    assert not (copy / "checkpoints" / "32").exists()


def test_evaluate_step_names_a_damaged_step_and_the_intact_ones(trained, tmp_path):
    w, exp, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(w, copy)
    _flip(_biggest(copy / "checkpoints" / "16"))
    with pytest.raises(CheckpointError, match=r"step 16 .* is damaged.*Intact steps: 8, 24, 32"):
        exp.restore(str(copy), 16)
    with pytest.raises(CheckpointError, match=r"no checkpoint of step 12345 .* 8, 24, 32"):
        exp.restore(str(copy), 12345)


def test_an_unsealed_step_is_used_when_it_restores_and_set_aside_when_not(trained, tmp_path):
    w, exp, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(w, copy)
    for s in (24, 32):  # as written by an older ltjax (or killed between orbax's rename and the seal)
        (copy / "checkpoints" / str(s) / CHECKSUMS).unlink()
    assert exp.restore(str(copy))[1] == 32
    (copy / "checkpoints" / "32" / "state" / "manifest.ocdbt").write_bytes(b"")  # nothing to compare with
    assert inspect_step(str(copy / "checkpoints" / "32")) == ("damaged", "state/manifest.ocdbt is empty")
    for f in [*(copy / "checkpoints" / "24" / "state").glob("**/d/*")]:  # the arrays' data: passes
        f.unlink()  # the structure check, orbax's restore fails
    state, step = exp.restore(str(copy))
    assert step == 16 and (copy / DAMAGED_DIR / "32").is_dir() and (copy / DAMAGED_DIR / "24").is_dir()
    reason = (copy / DAMAGED_DIR / "24" / "REASON.txt").read_text()
    assert "cannot be read" in reason


def test_an_intact_step_that_does_not_fit_the_config_is_an_error_not_damage(trained, tmp_path):
    from ltjax.training.loop import Experiment

    w, _, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(w, copy)
    other = Experiment(small_synthetic_config(**{"model.hidden": (48,)}))
    with pytest.raises(CheckpointError, match="intact .* does not restore into this run's state"):
        other.restore(str(copy))
    assert not (copy / DAMAGED_DIR).exists() and (copy / "checkpoints" / "32").is_dir()


def test_when_no_step_is_intact_training_refuses_once_then_starts_over(trained, tmp_path):
    from ltjax.training.loop import train_and_evaluate

    w, _, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(w, copy)
    for s in (8, 16, 24, 32):
        _flip(_biggest(copy / "checkpoints" / str(s)))
    with pytest.raises(CheckpointError, match="no intact checkpoint is left.*Nothing was deleted"):
        train_and_evaluate(_config(), str(copy))
    assert sorted(os.listdir(copy / DAMAGED_DIR)) == ["16", "24", "32", "8"]
    train_and_evaluate(_config(), str(copy))  # the same command again: from step 0
    assert inspect_step(str(copy / "checkpoints" / "32")) == ("intact", "")


_SLOW = pytest.mark.slow  # the same restore code as evaluate's matrix; three kinds stay in the default suite


@pytest.mark.parametrize("damage", ["flipped_bytes", "empty_step", "garbage_loop",
                                    *(pytest.param(d, marks=_SLOW) for d in ("truncated", "deleted_file",
                                                                              "deleted_metadata", "empty_manifest"))])
def test_training_resumes_from_the_newest_intact_step_and_ends_as_the_uninterrupted_run(trained, tmp_path,
                                                                                         capsys, damage):
    """The finished run with its last checkpoint (step 32) damaged: the same command resumes from step 24 and
    ends bit-identical to the undamaged run (the evaluate matrix above covers every kind of damage; the
    restore code is the same)."""
    from ltjax.training.loop import Experiment, train_and_evaluate

    w, _, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(w, copy)
    os.remove(copy / "eval.json")
    cfg = _config()
    DAMAGE[damage](_newest(copy))
    train_and_evaluate(cfg, str(copy))
    out = capsys.readouterr()
    assert "using checkpoint step 24" in out.err and "resumed from the checkpoint at step 24" in out.out
    exp = Experiment(cfg)
    chex.assert_trees_all_equal(jax.device_get(exp.restore(str(copy))[0].params),
                                jax.device_get(exp.restore(str(w))[0].params))
    a, b = (json.loads((p / "eval.json").read_text()) for p in (w, copy))
    assert a["mAP"] == b["mAP"]
