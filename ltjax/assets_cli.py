"""Command line of the asset cache: ``python -m ltjax.assets_cli list`` / ``fetch NAME...``.

Kept apart from :mod:`ltjax.assets` because it imports every module that registers assets (datasets
and models, which themselves import :mod:`ltjax.assets`): the fetcher stays free of import cycles.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ltjax import assets


def _import_registering_modules() -> None:
    """Datasets and models register their assets where they are defined; import them all."""
    import ltjax.data  # noqa: F401
    import ltjax.models  # noqa: F401


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ltjax.assets_cli", description=assets.__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the known assets and whether they are cached")
    p_fetch = sub.add_parser("fetch", help="fetch assets and print their paths")
    p_fetch.add_argument("names", nargs="+", metavar="NAME")
    args = parser.parse_args(argv)
    _import_registering_modules()

    if args.command == "list":
        print(f"cache: {assets.cache_dir()}")
        for name in assets.ASSETS.names():
            asset = assets.ASSETS.get(name)
            state = "present" if assets.is_present(asset) else "missing"
            print(f"{name}\t{asset.requirement}\t{state}\t{assets.member_path(asset)}")
        return 0
    status = 0
    for name in args.names:
        try:
            print(assets.fetch(name))
        except (assets.AssetUnavailableError, KeyError) as e:
            print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
