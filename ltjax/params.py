"""Parameter paths: a pytree key path as ``"backbone/trunk/conv1/kernel"`` and masks from path patterns
(the phases' ``trainable`` / ``reinit`` and the optimiser's parameter groups use them)."""
from __future__ import annotations

import re
from typing import Any

import jax

from ltjax.errors import ConfigError


def param_path(path) -> str:
    """A pytree key path as ``"a/b/c"``."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def path_mask(params, patterns: tuple[str, ...], what: str) -> Any:
    """Bool pytree: True where a parameter's path matches one of ``patterns`` (``re.search``).  Every
    pattern must match at least one parameter (a typo must not silently freeze or train nothing)."""
    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p))
        except re.error as e:
            raise ConfigError(f"{what}: {p!r} is not a regular expression ({e})") from None
    hits = [0] * len(compiled)

    def match(path, _leaf):
        text = param_path(path)
        out = False
        for i, rx in enumerate(compiled):
            if rx.search(text):
                hits[i] += 1
                out = True
        return out

    mask = jax.tree_util.tree_map_with_path(match, params)
    missing = [p for p, h in zip(patterns, hits) if not h]
    if missing:
        paths = sorted({param_path(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]})
        shown = ", ".join(paths[:12]) + (" ..." if len(paths) > 12 else "")
        raise ConfigError(f"{what}: {missing} match no parameter; parameter paths are e.g.: {shown}")
    return mask
