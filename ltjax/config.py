"""Experiment configs: loading ``configs/NAME.py[:ARG]``, command-line overrides, saving to a workdir.

This module owns everything between the command line and a locked ``ml_collections.ConfigDict``:

* :func:`parse_cli` reads ``--config``, ``--workdir`` and ``--config.FIELD.PATH=VALUE`` flags
  (our own parser; absl's ``config_flags`` is deliberately not used),
* :func:`load_config` imports a config file by path and calls its ``get_config(arg)``,
* :func:`apply_overrides` converts each override string to the type of the field it replaces,
* :func:`resolve_config` does both and returns the locked config,
* :func:`save_config` / :func:`load_saved_config` write and read ``WORKDIR/config.json``,
* :func:`exit_on_config_error` / :func:`run_cli` turn a :class:`ConfigError` into
  ``error: <message>`` on stderr and exit status 2 instead of a traceback.

It imports only the standard library and ``ml_collections`` so that every config mistake is
reported before anything heavy (JAX, data) is imported.

Reviewed against ``ml_collections.config_flags`` (issue 19, ml_collections 1.x with absl flags), case by case:

* file loading: ``DEFINE_config_file`` cannot load a config that imports a sibling (``configs/bce_yeast.py``
  imports ``yeast``: ModuleNotFoundError); ours puts the file's folder on the path, and names a config
  argument the file rejects with the file's own ``arg:`` help (issue 18).
* overrides: the library converts ``--config.train.num_epochs=1.5`` and ``...=abc`` with absl's parsers
  ("invalid literal for int() with base 10: '1.5'") and suggests a name for an unknown field
  ("'lrr' Did you mean "lr""); ours adds the valid fields of the parent, the expected type with an example
  value, and every bad override of the command line in one message.  Both accept ``(512,256)`` and
  ``512,256`` for a tuple.
* the argv parser: absl's ``FLAGS`` is one process-wide parse, while ``ltjax.train`` / ``evaluate`` /
  ``predict`` take their own extra flags (``--step``, ``--out``, ``--inputs``) and the tests call the
  ``main`` functions many times in one process.
* ``config.json``: the library's JSON (``to_json``) turns tuples into lists, and a resumed run compares the
  saved config field by field with the new one (``ltjax.training.workdir.check_same_run``), so the codec here
  keeps tuples and lists apart.
* locking: delegated (``ConfigDict.lock()`` locks the nested dicts; the recursive helper here was dropped).
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import importlib.util
import inspect
import itertools
import json
import os
import re
import sys
import tempfile
from typing import Any, Callable, Iterator, Sequence, TypeVar

import ml_collections

from ltjax.errors import UserError
from ltjax.errors import ConfigError  # noqa: F401 (re-exported)

__all__ = [
    "CONFIG_FILENAME",
    "CLIArgs",
    "ConfigError",
    "apply_overrides",
    "exit_on_config_error",
    "load_config",
    "load_saved_config",
    "parse_cli",
    "resolve_config",
    "run_cli",
    "save_config",
    "usage_text",
]

CONFIG_FILENAME = "config.json"
_LIST_TAG = "__list__"  # config.json marker for a Python list (JSON arrays are read back as tuples)
_OVERRIDE_PREFIX = "--config."

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Loading config files
# ---------------------------------------------------------------------------------------------

_module_counter = itertools.count()


def _split_spec(spec: str) -> tuple[str, str | None]:
    """'dir/file.py:arg' -> ('dir/file.py', 'arg'); the split happens only on the last ':' and
    only when what precedes it is an existing ``.py`` file, so paths containing ':' still work."""
    if ":" in spec:
        path, arg = spec.rsplit(":", 1)
        if path.endswith(".py") and os.path.isfile(path):
            return path, arg
    return spec, None


def _py_files_in(directory: str) -> str:
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".py") and not n.startswith("_"))
    except OSError:
        return f"(directory {directory!r} does not exist)"
    return ", ".join(names) if names else "(none)"


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Imports ``path/file.py`` (or ``path/file.py:arg``) and returns ``get_config(arg)``.

    ``arg`` is the text after the last ':' (a string) or None when there is no ':'.  The file's own
    directory is importable while it runs, so a config can import a sibling helper module.
    """
    if not isinstance(spec, (str, os.PathLike)) or not str(spec):
        raise ConfigError(f"config spec must be a non-empty path like 'configs/NAME.py[:ARG]', got {spec!r}")
    spec = os.fspath(spec)
    path, arg = _split_spec(spec)
    if not os.path.isfile(path):
        missing = path
        if ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
            missing = spec.rsplit(":", 1)[0]  # 'typo.py:arg': report the file, not the whole spec
        directory = os.path.dirname(missing) or "."
        what = "is a directory, not a file" if os.path.isdir(missing) else "does not exist"
        raise ConfigError(
            f"config file {missing!r} {what}; .py files in {directory!r}: {_py_files_in(directory)}"
        )
    if not path.endswith(".py"):
        raise ConfigError(f"config file {path!r} must be a Python file ending in .py that defines get_config()")

    abs_path = os.path.abspath(path)
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    module_name = f"_ltjax_config_{next(_module_counter)}_{stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, abs_path)
    if module_spec is None or module_spec.loader is None:  # pragma: no cover - .py is always loadable
        raise ConfigError(f"cannot import config file {path!r}")
    module = importlib.util.module_from_spec(module_spec)
    directory = os.path.dirname(abs_path)
    sys.path.insert(0, directory)
    sys.modules[module_name] = module  # dataclasses etc. defined in the config look themselves up here
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(module_name, None)
        raise ConfigError(
            f"syntax error in config file {e.filename or path}, line {e.lineno}: {e.msg}"
        ) from None
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(directory)

    get_config = getattr(module, "get_config", None)
    if get_config is None or not callable(get_config):
        raise ConfigError(
            f"config file {path!r} does not define a function get_config(arg=None) returning an "
            "ml_collections.ConfigDict (start from ltjax.defaults.base_config())"
        )
    try:
        params = inspect.signature(get_config).parameters.values()
        takes_arg = any(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params
        )
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        takes_arg = True
    if takes_arg:
        try:
            config = get_config(arg)
        except UserError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, LookupError) as e:  # the arg was not understood
            if os.environ.get("LTJAX_DEBUG"):
                raise
            raise ConfigError(
                f"config file {path!r} does not accept the argument {arg!r}: {_exception_text(e)}."
                f"{_arg_help(module, path)}"
            ) from None
    elif arg is None:
        config = get_config()
    else:
        raise ConfigError(
            f"{path}: get_config() takes no argument but ':{arg}' was given; either drop ':{arg}' "
            "or define get_config(arg=None)"
        )
    if isinstance(config, ml_collections.FrozenConfigDict):
        config = ml_collections.ConfigDict(config)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"get_config() in {path!r} returned {type(config).__name__}, but it must return an "
            "ml_collections.ConfigDict (start from ltjax.defaults.base_config())"
        )
    return config


def _exception_text(e: BaseException) -> str:
    text = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 else str(e)  # KeyError quotes its text
    text = str(text).strip().rstrip(".")
    if isinstance(e, ValueError) and text.startswith("invalid literal for int()"):
        text = f"it must be a whole number ({text})"
    return text


def _arg_help(module, path: str) -> str:
    """' Its arg: ...' from the config file's docstring (the paragraph that starts with 'arg'), if any."""
    doc = inspect.getdoc(module) or ""
    for para in doc.split("\n\n"):
        if para.lstrip().lower().startswith("arg"):
            return " " + " ".join(para.split())
    return f" See the docstring of {path} for the arguments it takes."


# ---------------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------------

_INT_RE = re.compile(r"[+-]?\d+")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class _BadValue(Exception):
    """Internal: a string that does not convert to the expected type (turned into a ConfigError)."""

    def __init__(self, expected: str, got: Any):
        super().__init__(expected, got)
        self.expected = expected
        self.got = got


def _type_name(template: Any) -> str:
    if isinstance(template, (tuple, list)):
        kind = type(template).__name__
        elem = _element_template(template)
        return f"{kind} of {type(elem).__name__}" if elem is not None else kind
    return type(template).__name__


def _cli_repr(value: Any) -> str:
    """A command-line spelling of ``value`` that :func:`apply_overrides` accepts back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        open_, close = ("(", ")") if isinstance(value, tuple) else ("[", "]")
        return open_ + ",".join(_cli_repr(v) if not isinstance(v, str) else repr(v) for v in value) + close
    if isinstance(value, str):
        return value
    return repr(value)


def _example(template: Any) -> str:
    if isinstance(template, bool):
        return "true (or false, yes, no, 1, 0)"
    if isinstance(template, int):
        return f"{template} (a whole number)"
    if isinstance(template, float):
        return f"{template!r} (or e.g. 1e-3)"
    if isinstance(template, (tuple, list)):
        if len(template) == 0:
            return "(1,2) or () for empty"
        return f"{_cli_repr(template)} (or e.g. {_cli_repr(template[0])} for one element, () for none)"
    return _cli_repr(template)


def _parse_bool(raw: str) -> bool:
    s = raw.strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise _BadValue("bool", raw)


def _parse_int(raw: str) -> int:
    s = raw.strip()
    if not _INT_RE.fullmatch(s):
        raise _BadValue("int", raw)
    return int(s)


def _parse_float(raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise _BadValue("float", raw) from None


def _element_template(seq: Sequence[Any]) -> Any:
    """The value new elements are converted like: the existing elements' common type (int and
    float together count as float), or None (no conversion) for an empty or mixed sequence."""
    if len(seq) == 0:
        return None
    types = {type(v) for v in seq}
    if len(types) == 1:
        return seq[0]
    if types <= {int, float}:
        return 0.0
    return None


def _split_sequence(raw: str) -> list[str]:
    s = raw.strip()
    if len(s) >= 2 and (s[0], s[-1]) in (("(", ")"), ("[", "]")):
        s = s[1:-1]
    tokens = [t.strip() for t in s.split(",")]
    if tokens and tokens[-1] == "":  # '5,' -> ['5']
        tokens.pop()
    return tokens


def _parse_sequence(raw: str, template: Sequence[Any]) -> Sequence[Any]:
    kind = type(template)
    if raw.strip() == "":
        raise _BadValue(f"{_type_name(template)} (use () for an empty {kind.__name__})", raw)
    elem = _element_template(template)
    try:
        parsed = ast.literal_eval(raw.strip())
        items = list(parsed) if isinstance(parsed, (tuple, list)) else [parsed]
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        items = _split_sequence(raw)  # e.g. 'train,test' for a tuple of strings
    if isinstance(elem, str) and not all(isinstance(v, str) for v in items):
        items = _split_sequence(raw)  # '1,2' for a tuple of str means ('1', '2'), not (1, 2)
    if elem is None:
        return kind(items)
    try:
        return kind(_coerce_element(v, elem) for v in items)
    except _BadValue as e:
        raise _BadValue(_type_name(template), raw) from e


def _coerce_element(value: Any, template: Any) -> Any:
    if isinstance(value, str) and not isinstance(template, str):
        return _from_string(value, template)
    if isinstance(template, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif isinstance(template, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(template, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(template, str):
        if isinstance(value, str):
            return value
    elif isinstance(template, (tuple, list)):
        if isinstance(value, (tuple, list)):
            elem = _element_template(template)
            items = list(value) if elem is None else [_coerce_element(v, elem) for v in value]
            return type(template)(items)
    else:
        return value
    raise _BadValue(type(template).__name__, value)


def _from_string(raw: str, template: Any) -> Any:
    """Converts ``raw`` to the type of ``template`` (the field's current value)."""
    if isinstance(template, bool):
        return _parse_bool(raw)
    if isinstance(template, int):
        return _parse_int(raw)
    if isinstance(template, float):
        return _parse_float(raw)
    if isinstance(template, str):
        return raw
    if isinstance(template, (tuple, list)):
        return _parse_sequence(raw, template)
    if template is None:
        try:
            return ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return raw
    raise _BadValue(type(template).__name__, raw)


_TEMPLATE_FOR_TYPE = {bool: False, int: 0, float: 0.0, str: "", tuple: (), list: []}


def _field_names(config: ml_collections.ConfigDict) -> str:
    return ", ".join(sorted(str(k) for k in config.keys())) or "(none)"


def _unknown_field_message(path: str, parent_path: str, key: str, config: ml_collections.ConfigDict) -> str:
    keys = sorted(str(k) for k in config.keys())
    msg = f"unknown config field {path!r}"
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if close:
        suggestion = f"{parent_path}.{close[0]}" if parent_path else close[0]
        msg += f"; did you mean {suggestion!r}?"
    where = f"of {parent_path!r}" if parent_path else "at the top level"
    return f"{msg}{'' if close else ';'} valid fields {where}: {_field_names(config)}"


def _apply_one(config: ml_collections.ConfigDict, path: str, raw: str) -> None:
    if not isinstance(path, str) or not isinstance(raw, str):
        raise ConfigError(
            f"override must be a (field path, value) pair of strings, got ({path!r}, {raw!r})"
        )
    parts = path.split(".")
    if any(p == "" for p in parts):
        raise ConfigError(
            f"malformed config field path {path!r}: write dotted names like 'optimizer.lr' "
            "(no empty parts, no leading/trailing dots)"
        )
    node = config
    for depth, key in enumerate(parts):
        parent_path = ".".join(parts[:depth])
        if key not in node:
            raise ConfigError(_unknown_field_message(path, parent_path, key, node))
        if depth == len(parts) - 1:
            break
        child = node[key]
        if not isinstance(child, ml_collections.ConfigDict):
            here = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"cannot set config field {path!r}: {here!r} is a single {type(child).__name__} "
                f"value ({_cli_repr(child)!r}), not a group of fields"
            )
        node = child

    key = parts[-1]
    current = node[key]
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(
            f"config field {path!r} is a group of fields and cannot be replaced by the single value "
            f"{raw!r}; set one of its fields instead, e.g. --config.{path}.FIELD=VALUE "
            f"(fields of {path!r}: {_field_names(current)})"
        )
    template = current
    declared = node.get_type(key)
    if current is None and declared in _TEMPLATE_FOR_TYPE:  # a typed placeholder
        if raw.strip() in ("None", "none", "null") and declared is not str:
            template = None
        else:
            template = _TEMPLATE_FOR_TYPE[declared]
    try:
        value = _from_string(raw, template)
    except _BadValue as e:
        if template is not None and type(template) not in (bool, int, float, str, tuple, list):
            raise ConfigError(
                f"config field {path!r} holds a {type(template).__name__}, which cannot be set "
                "from the command line; change it in the config file instead"
            ) from None
        raise ConfigError(
            f"config field {path!r} expects {_type_name(template)}, got {raw!r}; "
            f"example: --config.{path}={_example(template)}"
        ) from None
    try:
        node[key] = value
    except (TypeError, AttributeError, KeyError, ValueError) as e:
        raise ConfigError(f"cannot set config field {path!r} to {raw!r}: {e}") from None


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]]
) -> ml_collections.ConfigDict:
    """Sets each ``(dotted.field.path, raw string)`` in ``config`` (in place) and locks it.

    The string is converted to the type of the field's current value (see :func:`usage_text`).
    Overrides are applied in order, so when a field is given twice the last one wins.  Every bad
    override is reported (all of them, in one :class:`ConfigError`).  Returns ``config``.
    """
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"apply_overrides needs an ml_collections.ConfigDict, got {type(config).__name__}")
    if isinstance(config, ml_collections.FrozenConfigDict):
        raise ConfigError("cannot override fields of a FrozenConfigDict; pass ml_collections.ConfigDict(frozen)")
    errors = []
    for item in overrides:
        try:
            path, raw = item
        except (TypeError, ValueError):
            errors.append(f"override must be a (field path, value) pair, got {item!r}")
            continue
        try:
            _apply_one(config, path, raw)
        except ConfigError as e:
            errors.append(str(e))
    if errors:
        raise ConfigError("\n".join(errors) if len(errors) == 1 else
                          f"{len(errors)} bad config overrides:\n  " + "\n  ".join(errors))
    config.lock()  # (ml_collections locks the nested ConfigDicts too)
    return config


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CLIArgs:
    """What :func:`parse_cli` found on the command line."""

    config_spec: str | None = None  # 'configs/NAME.py' or 'configs/NAME.py:ARG'
    workdir: str | None = None
    overrides: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # in command-line order
    extra: dict[str, str] = dataclasses.field(default_factory=dict)  # values of the caller's extra_flags


_OVERRIDE_HELP = """\
overrides:
  --config.FIELD.PATH=VALUE (or --config.FIELD.PATH VALUE) sets one field that already exists
  in the config; VALUE is converted to the type of the field's current value:
    bool    true/false, yes/no, 1/0 (any case)
    int     a whole number: 8, -1
    float   0.01, 1e-3, 5
    str     taken as written
    tuple   (5,7)  [5,7]  5,7  5  () -- elements converted to the type of the existing ones
    None    a Python literal if it parses (3, 0.5, (1,2), None), otherwise the text itself
  Unknown fields and values of the wrong type are errors that list the valid choices.
  Overrides may come before or after --config; if a field is given twice, the last one wins.
  A VALUE that starts with '--' must use the '=' form."""


def usage_text(
    prog: str,
    description: str,
    *,
    require_config: bool = True,
    require_workdir: bool = True,
    accept_config: bool = True,
    extra_flags: dict[str, str] | None = None,
) -> str:
    """The ``--help`` text of :func:`parse_cli` (exposed so it can be shown in docs)."""
    synopsis = [prog]
    if accept_config:
        synopsis.append("--config configs/NAME.py[:ARG]" if require_config else "[--config configs/NAME.py[:ARG]]")
    synopsis.append("--workdir DIR" if require_workdir else "[--workdir DIR]")
    for name in extra_flags or {}:
        synopsis.append(f"[--{name} VALUE]")
    synopsis.append("[--config.FIELD.PATH=VALUE ...]")
    rows = []
    if accept_config:
        rows.append(("--config PATH[:ARG]", "experiment config file defining get_config(arg=None); text after "
                     "the last ':' is passed to it as a string" + ("" if require_config else " (optional)")))
    rows.append(("--workdir DIR", "directory for checkpoints, logs and config.json"
                 + ("" if require_workdir else " (optional)")))
    for name, help_ in (extra_flags or {}).items():
        rows.append((f"--{name} VALUE", help_))
    rows.append(("--config.FIELD.PATH=VALUE", "override one config field (see below)"))
    rows.append(("-h, --help", "show this message and exit"))
    width = max(len(r[0]) for r in rows) + 2
    flag_lines = "\n".join(f"  {flag.ljust(width)}{help_}" for flag, help_ in rows)
    if accept_config:
        example = f"{prog} --config configs/NAME.py --workdir /tmp/run --config.optimizer.lr=0.01 " \
                  "--config.train.num_epochs 3"
    else:
        example = f"{prog} --workdir /tmp/run --config.eval.threshold=0.3"
    return (
        f"usage: {' '.join(synopsis)}\n\n{description}\n\nflags:\n{flag_lines}\n\n{_OVERRIDE_HELP}\n\n"
        f"example:\n  {example}\n"
    )


def parse_cli(
    argv: Sequence[str] | None = None,
    *,
    prog: str,
    description: str,
    require_config: bool = True,
    require_workdir: bool = True,
    accept_config: bool = True,
    extra_flags: dict[str, str] | None = None,
) -> CLIArgs:
    """Parses ``argv`` (default ``sys.argv[1:]``) into :class:`CLIArgs`.

    Accepts ``--flag=value`` and ``--flag value`` for ``--config``, ``--workdir``, every
    ``--config.FIELD.PATH`` and every name in ``extra_flags`` (name -> help text, e.g.
    ``{"step": "checkpoint step to evaluate"}``; values land in ``CLIArgs.extra``).  With
    ``accept_config=False`` a ``--config`` flag is rejected (overrides are still accepted).
    ``-h``/``--help`` prints :func:`usage_text` to stdout and exits with status 0; anything else is
    a :class:`ConfigError` that lists the accepted flags.  Duplicate overrides are kept in order
    (the last one wins when applied); a repeated ``--config``/``--workdir``/extra flag is an error.
    """
    if require_config and not accept_config:
        raise ValueError("parse_cli: require_config=True needs accept_config=True")
    extra_flags = dict(extra_flags or {})
    reserved = {"config", "workdir", "help", "h"}
    for name in extra_flags:
        if name in reserved or name.startswith("config.") or not re.fullmatch(r"[A-Za-z][\w-]*", name):
            raise ValueError(f"parse_cli: invalid extra flag name {name!r}")
    argv = list(sys.argv[1:] if argv is None else argv)

    def accepted() -> str:
        flags = (["--config PATH[:ARG]"] if accept_config else []) + ["--workdir DIR"]
        flags += [f"--{n} VALUE" for n in extra_flags]
        flags += ["--config.FIELD.PATH=VALUE", "-h/--help"]
        return ", ".join(flags)

    if any(a in ("-h", "--help") for a in argv):
        print(usage_text(prog, description, require_config=require_config, require_workdir=require_workdir,
                         accept_config=accept_config, extra_flags=extra_flags))
        raise SystemExit(0)

    args = CLIArgs()
    seen: set[str] = set()
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not token.startswith("--") or token == "--":
            raise ConfigError(
                f"unexpected argument {token!r}; {prog} takes only flags: {accepted()} "
                f"(run {prog} --help for details)"
            )
        name, eq, value = token[2:].partition("=")
        is_override = name.startswith("config.")
        if not (is_override or name == "workdir" or (name == "config" and accept_config) or name in extra_flags):
            raise ConfigError(
                f"unknown flag --{name}; accepted flags: {accepted()} (run {prog} --help for details)"
            )
        if not eq:
            if i >= len(argv) or argv[i].startswith("--"):
                raise ConfigError(f"flag --{name} needs a value: --{name}=VALUE or --{name} VALUE")
            value = argv[i]
            i += 1
        if is_override:
            path = name[len("config."):]
            if not path:
                raise ConfigError("flag --config. needs a field path, e.g. --config.optimizer.lr=0.01")
            args.overrides.append((path, value))
            continue
        if name in seen:
            raise ConfigError(f"flag --{name} was given more than once; give it once")
        seen.add(name)
        if value == "" and name in ("config", "workdir"):
            raise ConfigError(f"flag --{name} needs a non-empty value")
        if name == "config":
            args.config_spec = value
        elif name == "workdir":
            args.workdir = value
        else:
            args.extra[name] = value

    missing = []
    if require_config and args.config_spec is None:
        hint = ""
        if os.path.isdir("configs"):
            hint = f" (configs/ has: {_py_files_in('configs')})"
        missing.append(f"--config configs/NAME.py[:ARG]{hint}")
    if require_workdir and args.workdir is None:
        missing.append("--workdir DIR")
    if missing:
        raise ConfigError(f"{prog} needs " + " and ".join(missing) + f" (run {prog} --help for details)")
    return args


def resolve_config(args: CLIArgs, base: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
    """Loads ``args.config_spec`` (or takes ``base``, e.g. a workdir's saved config), applies
    ``args.overrides`` and returns the locked config.  ``base`` is modified in place."""
    if base is not None:
        if args.config_spec is not None:
            raise ConfigError(
                f"--config {args.config_spec} cannot be used here: the config comes from the workdir's "
                f"{CONFIG_FILENAME}; change single fields with --config.FIELD.PATH=VALUE instead"
            )
        config = base
    elif args.config_spec is not None:
        config = load_config(args.config_spec)
    else:
        raise ConfigError("no config given: pass --config configs/NAME.py[:ARG]")
    return apply_overrides(config, args.overrides)


# ---------------------------------------------------------------------------------------------
# config.json in the workdir
# ---------------------------------------------------------------------------------------------


def _encode(value: Any, path: str) -> Any:
    if isinstance(value, ml_collections.ConfigDict):
        out = {}
        for key, child in value.items():  # FieldReferences resolved to their values
            if not isinstance(key, str):
                raise ConfigError(f"config field {path}.{key!r} has a non-string name; it cannot be saved")
            out[key] = _encode(child, f"{path}.{key}" if path else key)
        return out
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return [_encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, list):
        return {_LIST_TAG: [_encode(v, f"{path}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):  # a plain dict inside a tuple/list
        if not all(isinstance(k, str) for k in value):
            raise ConfigError(f"config field {path!r} is a dict with non-string keys; it cannot be saved")
        return {k: _encode(v, f"{path}.{k}") for k, v in value.items()}
    raise ConfigError(
        f"config field {path!r} holds a {type(value).__name__} ({value!r}), which cannot be saved to "
        f"{CONFIG_FILENAME}; use bool, int, float, str, None, tuples/lists of those, or sub-configs"
    )


def _decode(value: Any, top_level: bool) -> Any:
    if isinstance(value, list):
        return tuple(_decode(v, False) for v in value)
    if isinstance(value, dict):
        if set(value) == {_LIST_TAG}:
            return [_decode(v, False) for v in value[_LIST_TAG]]
        if top_level:  # fields of a ConfigDict: objects are sub-configs
            config = ml_collections.ConfigDict()
            for key, child in value.items():
                config[key] = _decode(child, True)
            return config
        return {k: _decode(v, False) for k, v in value.items()}
    return value


def save_config(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> str:
    """Writes ``WORKDIR/config.json`` (sorted keys, indent 2) atomically; returns its path.

    Tuples are JSON arrays and sub-configs JSON objects; a Python list is written as
    ``{"__list__": [...]}`` so that :func:`load_saved_config` gives back exactly the same types.
    """
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"save_config needs an ml_collections.ConfigDict, got {type(config).__name__}")
    text = json.dumps(_encode(config, ""), sort_keys=True, indent=2) + "\n"
    workdir = os.fspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILENAME)
    fd, tmp = tempfile.mkstemp(dir=workdir, prefix=f".{CONFIG_FILENAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return path


def load_saved_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """Reads ``WORKDIR/config.json`` written by :func:`save_config`; returns a locked ConfigDict
    equal to the saved one (tuples, sub-configs, ints/floats/bools/None all preserved)."""
    workdir = os.fspath(workdir)
    path = os.path.join(workdir, CONFIG_FILENAME)
    if not os.path.isfile(path):
        where = f"workdir {workdir!r} does not exist" if not os.path.isdir(workdir) else \
            f"workdir {workdir!r} has no {CONFIG_FILENAME}"
        raise ConfigError(
            f"{where}; it is created by training: python -m ltjax.train --config configs/NAME.py "
            f"--workdir {workdir}"
        )
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}; re-create it by training into a fresh workdir") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object of config fields, found {type(data).__name__}")
    try:
        config = _decode(data, True)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{path} is not a valid saved config: {e}") from None
    config.lock()  # (ml_collections locks the nested ConfigDicts too)
    return config


# ---------------------------------------------------------------------------------------------
# CLI entry points
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def exit_on_config_error() -> Iterator[None]:
    """Inside this block a :class:`ConfigError` or any other :class:`ltjax.errors.UserError` (missing
    dataset files, a missing optional package, ...) prints ``error: <message>`` to stderr and exits with
    status 2 (no traceback); Ctrl-C prints where the run can resume and exits 130.  With ``LTJAX_DEBUG=1``
    both propagate with their traceback; every other exception propagates unchanged."""
    try:
        yield
    except UserError as e:
        if os.environ.get("LTJAX_DEBUG"):
            raise
        sys.stdout.flush()
        print(f"error: {e}", file=sys.stderr)
        sys.stderr.flush()
        raise SystemExit(2) from None
    except KeyboardInterrupt as e:  # Ctrl-C: the training loop says where it checkpointed
        if os.environ.get("LTJAX_DEBUG"):
            raise
        sys.stdout.flush()
        text = str(e) or ("interrupted (Ctrl-C). Run the same command again: training resumes from the newest "
                          "checkpoint")
        print(text if text.startswith("interrupted") else f"interrupted: {text}", file=sys.stderr)
        sys.stderr.flush()
        raise SystemExit(130) from None


def run_cli(main_fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Calls ``main_fn(*args, **kwargs)`` inside :func:`exit_on_config_error` and returns its
    result; use as ``if __name__ == "__main__": run_cli(main)``."""
    with exit_on_config_error():
        return main_fn(*args, **kwargs)
