"""The emulated arm64 machine's files: a Debian arm64 root file system with Python, and the lock's aarch64 wheels.

Nothing here runs arm64 code. ``mmdebstrap --variant=extract`` downloads Debian's arm64 packages of
Python and unpacks them without running their maintainer scripts (no binfmt_misc, no chroot: qemu
runs the guest's Python directly with ``-L``). The Lambda image's own lock
(``lambda_onnx/requirements.lock``) is then installed for that Python's version and aarch64 with
``--require-hashes --no-deps``, the Dockerfile's install: the same onnxruntime, numpy and Pillow
versions, from the same hashes. Both are cached; the first build downloads about 80 MB.

Debian bookworm's Python is 3.11 and Lambda's is 3.12: the wheels are those versions' cp311 builds.
ONNX Runtime's kernels (MLAS) are the same code in every CPython build of one release.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from lambda_onnx.errors import ClassifierError

ROOT = Path(__file__).resolve().parents[3]
LOCK = ROOT / "lambda_onnx" / "requirements.lock"

SUITE = "bookworm"
APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
# Python and the C++ runtime onnxruntime links against; their dependencies come with them.
PACKAGES = ("python3.11", "libstdc++6")
# The manylinux tags pip may pick for aarch64 (numpy 2.4 and onnxruntime 1.32 need glibc 2.27/2.28).
AARCH64_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")
_DONE = ".complete"

Step = Callable[[str], None]


class Arm64SetupError(ClassifierError):
    """The emulated arm64 machine could not be set up (a missing tool, a failed download)."""

    code = "arm64_setup"


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/resnet-serverless/arm64`` (``~/.cache/...``): the root file system and wheels."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "resnet-serverless" / "arm64"


def _noop(message: str) -> None:
    pass


def host_mirror(sources: tuple[Path, ...] = APT_SOURCES) -> str:
    """The Debian archive this machine's apt uses (the first ``URIs:`` of a deb822 file, or the first
    ``deb`` line's), so the root file system comes from where the host's own packages come from."""
    for path in sources:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split()
            if len(words) >= 2 and words[0] == "URIs:" and not words[1].endswith("-security"):
                return words[1]
            if len(words) >= 3 and words[0] == "deb" and not words[1].startswith("["):
                return words[1]
    raise Arm64SetupError(f"no Debian archive found in this machine's apt sources ({', '.join(map(str, sources))})")


def _recipe() -> str:
    return f"mmdebstrap --variant=extract --architectures=arm64 {SUITE} {host_mirror()} {' '.join(PACKAGES)}\n"


def build_rootfs(cache: Path, on_step: Step = _noop) -> Path:
    """The arm64 root file system in ``cache`` (built on first use, about 75 MB), with mmdebstrap's
    progress passed to ``on_step`` line by line."""
    target = Path(cache) / f"rootfs-{SUITE}-arm64"
    if (target / _DONE).is_file() and (target / _DONE).read_text() == _recipe():
        on_step(f"arm64 root file system: {target} (cached)")
        return target
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise Arm64SetupError("mmdebstrap is not installed: it builds the arm64 root file system from Debian's "
                              "packages (Debian/Ubuntu: apt-get install mmdebstrap)")
    building = Path(cache) / f".rootfs-building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    on_step(f"building the arm64 root file system ({SUITE}: {', '.join(PACKAGES)}) in {target}")
    command = [mmdebstrap, "--variant=extract", "--architectures=arm64", f"--include={','.join(PACKAGES)}",
               SUITE, str(building), host_mirror()]
    _stream(command, on_step, "mmdebstrap")
    (building / _DONE).write_text(_recipe())
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)
    return target


def guest_python(rootfs: Path) -> tuple[Path, str]:
    """The guest's Python (``/usr/bin/python3.X`` under ``rootfs``) and its version ``"3.X"``."""
    found = sorted(p for p in (rootfs / "usr" / "bin").glob("python3.*") if re.fullmatch(r"python3\.\d+", p.name))
    if not found:
        raise Arm64SetupError(f"no python3.X in {rootfs}/usr/bin: remove {rootfs} and build it again")
    return found[-1], found[-1].name.removeprefix("python")


def lock_digest() -> str:
    return hashlib.sha256(LOCK.read_bytes()).hexdigest()


def install_lock(rootfs: Path, cache: Path, on_step: Step = _noop) -> Path:
    """The lock's aarch64 wheels for the guest's Python, unpacked into a directory of ``cache`` (cached
    per lock and Python version), installed as the Dockerfile does: hashes required, no resolving."""
    _, version = guest_python(rootfs)
    site = Path(cache) / f"site-cp{version.replace('.', '')}-aarch64-{lock_digest()[:12]}"
    if (site / _DONE).is_file():
        on_step(f"the lock's aarch64 wheels for Python {version}: {site} (cached)")
        return site
    building = site.with_name(site.name + f".building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    on_step(f"installing {LOCK.relative_to(ROOT)} for aarch64, Python {version} (--require-hashes --no-deps) in {site}")
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-compile", "--require-hashes",
               "--no-deps", "--only-binary=:all:", "--implementation", "cp", "--python-version", version,
               *[arg for tag in AARCH64_PLATFORMS for arg in ("--platform", tag)], "--target", str(building),
               "-r", str(LOCK)]
    _stream(command, on_step, "pip")
    (building / _DONE).write_text(lock_digest() + "\n")
    shutil.rmtree(site, ignore_errors=True)
    building.rename(site)
    return site


def _stream(command: list[str], on_step: Step, name: str) -> None:
    """Run ``command``, passing each output line to ``on_step``; a failure raises with its last lines."""
    tail: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if not line or line.startswith("WARNING: Location"):  # pip's notes about this machine's local indexes
                continue
            tail = (tail + [line])[-20:]
            on_step(f"  {name}: {line}")
    if proc.returncode != 0:
        raise Arm64SetupError(f"{name} failed (exit {proc.returncode}):\n" + "\n".join(tail))
