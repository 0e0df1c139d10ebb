"""Tests for ltjax.config: config files, overrides, the CLI parser, config.json and CLI errors."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import ml_collections
import pytest

from ltjax.config import (
    CLIArgs,
    ConfigError,
    apply_overrides,
    exit_on_config_error,
    load_config,
    load_saved_config,
    parse_cli,
    resolve_config,
    run_cli,
    save_config,
)
from ltjax.defaults import base_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG_SRC = """
import ml_collections
from ltjax.defaults import base_config
from helper_for_config import EPOCHS  # a sibling module: the config's directory must be importable

def get_config(arg=None):
    c = base_config()
    c.train.num_epochs = EPOCHS
    c.method.name = "bce" if arg is None else arg
    c.model.hidden = (64, 32)          # tuple of int
    c.model.dropout = 0.1
    c.model.pretrained = None          # None-valued field
    c.model.tags = ("a", "b")          # tuple of str
    c.model.widths = [8, 16]           # a list stays a list
    return c
"""


@pytest.fixture
def cfg_file(tmp_path):
    (tmp_path / "helper_for_config.py").write_text("EPOCHS = 11\n")
    path = tmp_path / "exp.py"
    path.write_text(CONFIG_SRC)
    return str(path)


@pytest.fixture
def config(cfg_file):
    return load_config(cfg_file)


# ---- load_config --------------------------------------------------------------------------


def test_load_config_passes_arg_and_imports_sibling(cfg_file):
    plain = load_config(cfg_file)
    assert plain.method.name == "bce"  # no ':' -> get_config(None)
    assert plain.train.num_epochs == 11  # came from the sibling helper module
    with_arg = load_config(cfg_file + ":ldam")
    assert with_arg.method.name == "ldam"
    assert cfg_file.rsplit(os.sep, 1)[0] not in sys.path  # the import path is cleaned up again


def test_load_config_colon_only_split_when_prefix_is_existing_py(tmp_path):
    odd = tmp_path / "we:ird"
    odd.mkdir()
    path = odd / "c.py"
    path.write_text("from ltjax.defaults import base_config\ndef get_config(arg=None):\n"
                    "    c = base_config(); c.data.name = repr(arg); return c\n")
    assert load_config(str(path)).data.name == "None"  # the ':' in the directory is not a split point
    assert load_config(f"{path}:y").data.name == "'y'"
    assert load_config(f"{path}:").data.name == "''"  # empty arg is passed as ''


def test_load_config_missing_file_lists_py_files(tmp_path, cfg_file):
    (tmp_path / "other.py").write_text("")
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path / "exq.py") + ":arg")
    msg = str(e.value)
    assert "exq.py" in msg and "does not exist" in msg
    assert "exp.py" in msg and "other.py" in msg and "helper_for_config.py" in msg


def test_load_config_without_get_config_or_wrong_return(tmp_path):
    (tmp_path / "none.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="does not define a function get_config"):
        load_config(str(tmp_path / "none.py"))
    (tmp_path / "dict.py").write_text("def get_config(arg=None):\n    return {'a': 1}\n")
    with pytest.raises(ConfigError, match="returned dict.*ConfigDict"):
        load_config(str(tmp_path / "dict.py"))
    (tmp_path / "noarg.py").write_text(
        "import ml_collections\ndef get_config():\n    return ml_collections.ConfigDict({'a': 1})\n")
    assert load_config(str(tmp_path / "noarg.py")).a == 1
    with pytest.raises(ConfigError, match="takes no argument"):
        load_config(str(tmp_path / "noarg.py") + ":x")


def test_load_config_syntax_error_is_config_error(tmp_path):
    (tmp_path / "bad.py").write_text("def get_config(:\n")
    with pytest.raises(ConfigError, match=r"syntax error in config file .*bad\.py, line 1"):
        load_config(str(tmp_path / "bad.py"))


# ---- apply_overrides: types ---------------------------------------------------------------


def test_overrides_take_effect_with_right_types(config):
    apply_overrides(config, [
        ("optimizer.lr", "1e-3"),  # float
        ("optimizer.weight_decay", "5"),  # int text into a float field -> float
        ("train.num_epochs", "3"),  # int
        ("mesh.data", "-1"),
        ("optimizer.nesterov", "TRUE"),  # bool, case-insensitive
        ("mesh.shard_params", "yes"),
        ("distributed.enabled", "off"),  # str
        ("data.name", "coco"),  # str
        ("eval.top_k", "(2,4)"),  # tuple of int
        ("schedule.decay_epochs", "6"),  # one element -> 1-tuple
        ("model.hidden", "[128, 64, 32]"),
        ("data.groups.quantiles", "0.25,1"),  # tuple of float: the int element becomes float
        ("model.pretrained", "(1, 2)"),  # None field: Python literal
        ("model.tags", "x,y"),  # tuple of str without quotes
        ("model.widths", "4,5"),  # list stays list
    ])
    expected = {
        "optimizer.lr": 1e-3, "optimizer.weight_decay": 5.0, "train.num_epochs": 3, "mesh.data": -1,
        "optimizer.nesterov": True, "mesh.shard_params": True, "distributed.enabled": "off",
        "data.name": "coco", "eval.top_k": (2, 4), "schedule.decay_epochs": (6,),
        "model.hidden": (128, 64, 32), "data.groups.quantiles": (0.25, 1.0),
        "model.pretrained": (1, 2), "model.tags": ("x", "y"), "model.widths": [4, 5],
    }
    for path, want in expected.items():
        node = config
        for part in path.split("."):
            node = node[part]
        assert node == want and type(node) is type(want), (path, node)
        if isinstance(want, (tuple, list)):
            assert [type(v) for v in node] == [type(v) for v in want], path


def test_more_sequence_and_none_spellings(config):
    apply_overrides(config, [("eval.top_k", "()"), ("model.tags", "1,2"), ("model.pretrained", "imagenet")])
    assert config.eval.top_k == () and isinstance(config.eval.top_k, tuple)
    assert config.model.tags == ("1", "2")  # str elements stay strings
    assert config.model.pretrained == "imagenet"  # not a literal -> the raw string
    apply_overrides(config, [("eval.top_k", "5,")])
    assert config.eval.top_k == (5,)
    for raw, want in [("0.5", 0.5), ("3", 3), ("True", True), ("None", None), ("'x'", "x")]:
        c = ml_collections.ConfigDict({"p": None})
        apply_overrides(c, [("p", raw)])
        assert c.p == want and type(c.p) is type(want), raw


def test_placeholder_field_is_coerced_to_its_declared_type():
    c = ml_collections.ConfigDict({"n": ml_collections.config_dict.placeholder(int)})
    apply_overrides(c, [("n", "7")])
    assert c.n == 7 and type(c.n) is int
    with pytest.raises(ConfigError, match="expects int"):
        apply_overrides(c, [("n", "abc")])


def test_duplicate_override_last_one_wins(config):
    apply_overrides(config, [("optimizer.lr", "0.1"), ("optimizer.lr", "0.3")])
    assert config.optimizer.lr == 0.3


# ---- apply_overrides: errors --------------------------------------------------------------


def test_unknown_nested_field_names_path_lists_fields_and_suggests(config):
    with pytest.raises(ConfigError) as e:
        apply_overrides(config, [("optimizer.lrr", "0.1")])
    msg = str(e.value)
    assert "unknown config field 'optimizer.lrr'" in msg
    assert "did you mean 'optimizer.lr'?" in msg
    assert "valid fields of 'optimizer': b1, b2, eps, grad_clip_norm, lr, momentum" in msg


def test_unknown_deeply_nested_and_intermediate_fields(config):
    with pytest.raises(ConfigError) as e:
        apply_overrides(config, [("data.grups.mode", "quantile")])
    msg = str(e.value)
    assert "'data.grups.mode'" in msg and "did you mean 'data.groups'?" in msg
    assert "valid fields of 'data':" in msg and "batch_size" in msg
    with pytest.raises(ConfigError, match=r"'data.groups.mod'; did you mean 'data.groups.mode'\?"):
        apply_overrides(config, [("data.groups.mod", "quantile")])


def test_unknown_top_level_field(config):
    with pytest.raises(ConfigError) as e:
        apply_overrides(config, [("seeed", "1")])
    msg = str(e.value)
    assert "unknown config field 'seeed'; did you mean 'seed'?" in msg
    assert "valid fields at the top level: data, distributed, eval" in msg
    with pytest.raises(ConfigError) as e:
        apply_overrides(config, [("qqqqqq", "1")])
    assert "did you mean" not in str(e.value) and "valid fields at the top level" in str(e.value)


@pytest.mark.parametrize(
    "path,raw,expected",
    [
        ("train.num_epochs", "0.5", "int"),
        ("train.num_epochs", "3e2", "int"),
        ("optimizer.nesterov", "maybe", "bool"),
        ("optimizer.lr", "abc", "float"),
        ("eval.top_k", "1,a", "tuple of int"),
        ("eval.top_k", "1.5", "tuple of int"),
        ("data.groups.quantiles", "0.2,x", "tuple of float"),
    ],
)
def test_wrong_types_name_field_type_value_and_example(config, path, raw, expected):
    before = config.to_dict()
    with pytest.raises(ConfigError) as e:
        apply_overrides(config, [(path, raw)])
    msg = str(e.value)
    assert f"config field '{path}' expects {expected}, got {raw!r}" in msg
    assert f"example: --config.{path}=" in msg
    assert config.to_dict() == before  # a rejected override changes nothing


def test_example_in_error_is_itself_valid(config):
    with pytest.raises(ConfigError) as e:
        apply_overrides(config, [("eval.top_k", "x")])
    example = str(e.value).split("example: --config.eval.top_k=")[1].split(" ")[0]
    apply_overrides(config, [("eval.top_k", example)])
    assert config.eval.top_k == (1, 3, 5)


def test_replacing_sub_config_or_descending_into_scalar_is_error(config):
    with pytest.raises(ConfigError, match="'optimizer' is a group of fields .* single value '3'"):
        apply_overrides(config, [("optimizer", "3")])
    assert isinstance(config.optimizer, ml_collections.ConfigDict)
    with pytest.raises(ConfigError, match="'seed' is a single int value"):
        apply_overrides(config, [("seed.x", "1")])
    with pytest.raises(ConfigError, match="malformed config field path"):
        apply_overrides(config, [("optimizer..lr", "1")])


def test_all_bad_overrides_reported_together(config):
    with pytest.raises(ConfigError) as e:
        apply_overrides(config, [("optimizer.lrr", "1"), ("train.num_epochs", "x"), ("seed", "4")])
    msg = str(e.value)
    assert msg.startswith("2 bad config overrides") and "optimizer.lrr" in msg and "train.num_epochs" in msg


def test_config_is_locked_after_overrides(config):
    apply_overrides(config, [])
    with pytest.raises(AttributeError):
        config.optimizer.lrr = 0.1  # typo'd field cannot be added by code
    with pytest.raises(KeyError):
        config["new_top_level"] = 1
    config.optimizer.lr = 0.5  # existing fields stay writable
    assert config.optimizer.lr == 0.5


# ---- save / load --------------------------------------------------------------------------


def test_save_load_round_trip(config, tmp_path):
    apply_overrides(config, [("model.pretrained", "None")])
    config.unlock()
    config.extra = ml_collections.ConfigDict({"nested": ((1, 2.5), (True, None)), "flag": False})
    config.lock()
    path = save_config(config, tmp_path / "run")
    assert path == os.path.join(str(tmp_path / "run"), "config.json")
    assert not [n for n in os.listdir(tmp_path / "run") if n != "config.json"]  # no temp file left
    text = open(path).read()
    assert '"lr": 0.02' in text and text.index('"data"') < text.index('"eval"') < text.index('"train"')
    loaded = load_saved_config(tmp_path / "run")
    assert loaded == config
    assert loaded.eval.top_k == (1, 3, 5) and isinstance(loaded.eval.top_k, tuple)
    assert isinstance(loaded.model.widths, list)
    assert loaded.extra.nested == ((1, 2.5), (True, None))
    assert type(loaded.extra.nested[0][0]) is int and type(loaded.extra.nested[0][1]) is float
    assert type(loaded.optimizer.weight_decay) is float and type(loaded.seed) is int
    assert isinstance(loaded.data.groups, ml_collections.ConfigDict)
    assert loaded.is_locked and loaded.data.groups.is_locked
    # the saved config can be overridden again (evaluate: --config.eval.threshold=0.3)
    resolved = resolve_config(CLIArgs(workdir=str(tmp_path), overrides=[("eval.threshold", "0.3")]), loaded)
    assert resolved.eval.threshold == 0.3


def test_save_rejects_unserialisable_value(tmp_path):
    c = ml_collections.ConfigDict({"fn": object()})
    with pytest.raises(ConfigError, match="'fn' holds a object"):
        save_config(c, tmp_path)
    assert not os.path.exists(tmp_path / "config.json")


def test_load_saved_config_missing(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_saved_config(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "has no config.json" in msg and "python -m ltjax.train" in msg
    with pytest.raises(ConfigError, match="does not exist"):
        load_saved_config(tmp_path / "nope")


# ---- parse_cli / resolve_config -----------------------------------------------------------


def _parse(argv, **kw):
    return parse_cli(argv, prog="python -m ltjax.train", description="Train a model.", **kw)


def test_parse_cli_both_spellings_and_order_independence():
    a = _parse(["--config.optimizer.lr=0.01", "--config", "c.py:x", "--workdir=/w",
                "--config.train.num_epochs", "3", "--config.mesh.data", "-1"])
    b = _parse(["--config=c.py:x", "--workdir", "/w", "--config.optimizer.lr", "0.01",
                "--config.train.num_epochs=3", "--config.mesh.data=-1"])
    for args in (a, b):
        assert args.config_spec == "c.py:x" and args.workdir == "/w"
    assert a.overrides == [("optimizer.lr", "0.01"), ("train.num_epochs", "3"), ("mesh.data", "-1")]
    assert sorted(b.overrides) == sorted(a.overrides)


def test_parse_cli_rejects_unknown_and_malformed_flags():
    with pytest.raises(ConfigError) as e:
        _parse(["--config", "c.py", "--workdir", "w", "--lr=0.1"])
    assert "unknown flag --lr" in str(e.value) and "--workdir DIR" in str(e.value)
    assert "--config.FIELD.PATH=VALUE" in str(e.value)
    with pytest.raises(ConfigError, match="unexpected argument 'stray'"):
        _parse(["--config", "c.py", "--workdir", "w", "stray"])
    with pytest.raises(ConfigError, match="--config.optimizer.lr needs a value"):
        _parse(["--config", "c.py", "--workdir", "w", "--config.optimizer.lr"])
    with pytest.raises(ConfigError, match="--config.optimizer.lr needs a value"):
        _parse(["--config.optimizer.lr", "--config", "c.py", "--workdir", "w"])
    with pytest.raises(ConfigError, match="more than once"):
        _parse(["--config", "c.py", "--config", "d.py", "--workdir", "w"])
    with pytest.raises(ConfigError, match="needs --config .* and --workdir DIR"):
        _parse([])
    with pytest.raises(ConfigError, match="unknown flag --config"):
        _parse(["--config", "c.py", "--workdir", "w"], require_config=False, accept_config=False)


def test_parse_cli_optional_and_extra_flags():
    args = _parse(["--workdir", "w", "--config.eval.threshold=0.3", "--step", "100"],
                  require_config=False, extra_flags={"step": "checkpoint step"})
    assert args.config_spec is None and args.extra == {"step": "100"}
    assert args.overrides == [("eval.threshold", "0.3")]


def test_parse_cli_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as e:
        _parse(["--config", "c.py", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m ltjax.train --config") and "Train a model." in out
    assert "--config.FIELD.PATH=VALUE" in out and "last one wins" in out and "tuple" in out


def test_resolve_config_end_to_end(cfg_file):
    args = _parse([f"--config={cfg_file}:focal", "--workdir", "w", "--config.optimizer.lr", "0.5"])
    config = resolve_config(args)
    assert config.method.name == "focal" and config.optimizer.lr == 0.5 and config.is_locked
    with pytest.raises(ConfigError, match="cannot be used here"):
        resolve_config(args, base=base_config())


# ---- CLI error handling -------------------------------------------------------------------


def test_exit_on_config_error_in_process(capsys):
    with pytest.raises(SystemExit) as e:
        with exit_on_config_error():
            raise ConfigError("bad thing")
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: bad thing\n"
    assert run_cli(lambda x: x + 1, 1) == 2
    with pytest.raises(RuntimeError):  # other errors are not swallowed
        run_cli(lambda: (_ for _ in ()).throw(RuntimeError("bug")))


def test_run_cli_subprocess_prints_error_and_exits_2(tmp_path, cfg_file):
    script = tmp_path / "tool.py"
    script.write_text(textwrap.dedent("""
        import sys
        from ltjax.config import parse_cli, resolve_config, run_cli

        def main(argv=None):
            args = parse_cli(argv, prog="tool", description="test tool")
            config = resolve_config(args)
            print("lr", config.optimizer.lr)

        if __name__ == "__main__":
            run_cli(main)
    """))
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def run(*argv):
        return subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True,
                              env=env, timeout=60)

    bad = run("--config", cfg_file, "--workdir", str(tmp_path), "--config.optimizer.lrr=0.1")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: unknown config field 'optimizer.lrr'; did you mean 'optimizer.lr'?")
    assert "Traceback" not in bad.stderr
    ok = run("--config", cfg_file, "--workdir", str(tmp_path), "--config.optimizer.lr", "0.25")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "lr 0.25"


def test_config_module_imports_nothing_heavy():
    code = "import sys, ltjax.config; heavy = {'jax', 'flax', 'optax', 'grain'} & set(sys.modules); print(sorted(heavy))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
