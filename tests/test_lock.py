"""The Lambda image's hash lock (lambda_onnx/requirements.lock) stays in step with the pins it is
compiled from (lambda_onnx/requirements.txt): every direct pin is locked at the same version, every
locked package has an exact version and at least one sha256, and the set is closed (pip, asked to
resolve it with hashes required, needs nothing outside it) for both architectures the template offers.

The tool virtualenvs .ci/install makes (the SAM CLI, the AWS CLI, checkov) are hash-locked the same way:
``.ci/locks/TOOL.lock``, compiled from ``.ci/locks/TOOL.in`` for Python 3.11 (each lock's first lines say
how), installed with ``--require-hashes --no-deps``; the last tests here hold that.

Regenerate after changing a pin (uv in a virtualenv of its own, not a project dependency):
``uv pip compile lambda_onnx/requirements.txt --python-version 3.12 --python-platform x86_64-manylinux_2_34
--only-binary :all: --generate-hashes --output-file lambda_onnx/requirements.lock`` (the lock's first
lines repeat it); ``--python-platform aarch64-manylinux_2_34`` gives the same pins and hashes: uv writes
the hash of every wheel of each pinned version, so one lock serves both architectures. Which wheel a
hash belongs to is not in the lock, so the proof that each architecture's cp312 wheels are covered
needs the index: the slow tests download them with hashes required (what the Dockerfile does).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.process import ROOT
from tests.helpers.taskroot import PLATFORMS, DockerfileError, pip_target_install

REQUIREMENTS = ROOT / "lambda_onnx" / "requirements.txt"
LOCK = ROOT / "lambda_onnx" / "requirements.lock"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")
HASH = re.compile(r"--hash=sha256:(?P<digest>[0-9a-f]+)")


def canonical(name: str) -> str:
    """PEP 503 normalisation: ``Pillow_HEIF`` and ``pillow-heif`` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def logical_lines(path: Path) -> list[str]:
    """Requirement lines with their ``\\`` continuations joined and comments dropped."""
    joined, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    if current.strip():
        joined.append(current)
    return joined


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in logical_lines(path):
        match = PIN.match(line)
        assert match, f"{path.name}: not an exact pin: {line[:80]!r}"
        name = canonical(match["name"])
        assert name not in found, f"{path.name}: {name} pinned twice"
        found[name] = match["version"]
    return found


def test_every_direct_pin_is_locked_at_the_same_version():
    direct, locked = pins(REQUIREMENTS), pins(LOCK)
    assert direct, "lambda_onnx/requirements.txt pins nothing"
    mismatched = {name: (version, locked.get(name)) for name, version in direct.items() if locked.get(name) != version}
    assert not mismatched, f"requirements.txt -> lock: {mismatched}; regenerate the lock (see this file's docstring)"


def test_every_locked_package_has_an_exact_version_and_hashes():
    lines = logical_lines(LOCK)
    assert len(lines) == len(pins(LOCK))  # one requirement per logical line, none without ==
    for line in lines:
        digests = [m["digest"] for m in HASH.finditer(line)]
        assert digests, f"no hash for {line.split()[0]}"
        assert all(len(d) == 64 for d in digests), line.split()[0]
        assert ";" not in line, f"{line.split()[0]}: a platform marker would install differently on arm64"


def test_the_lock_holds_no_torch_and_says_how_to_regenerate_it():
    assert not any("torch" in name for name in pins(LOCK))
    header = LOCK.read_text().splitlines()[:3]
    assert any("uv pip compile lambda_onnx/requirements.txt" in line and "--generate-hashes" in line
               and "--python-version 3.12" in line for line in header), header


def test_the_dockerfile_installs_the_lock_and_only_the_lock():
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = [line for line in dockerfile.splitlines() if line.startswith("RUN pip install")]
    assert len(installs) == 1, installs
    assert "--require-hashes" in installs[0] and "--no-deps" in installs[0] and "requirements.lock" in installs[0]
    assert "requirements.txt" not in installs[0]


@pytest.mark.slow
@pytest.mark.parametrize("machine", list(PLATFORMS))
def test_the_lock_is_closed_for_each_architecture(tmp_path, machine):
    """Resolve with dependencies (no --no-deps) and hashes required: a transitive dependency missing
    from the lock has no hash, and pip refuses it. Metadata only (--dry-run): nothing is installed."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
               "--require-hashes", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
               "--target", str(tmp_path), *[arg for p in PLATFORMS[machine] for arg in ("--platform", p)],
               "-r", str(LOCK)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("machine", list(PLATFORMS))
def test_each_architecture_gets_its_own_cp312_wheels_with_hashes_required(tmp_path, machine):
    """The Dockerfile's install (--require-hashes --no-deps) for this architecture: pip fetches one
    wheel per locked package and refuses any whose sha256 the lock lacks; every compiled one is the
    architecture's own CPython 3.12 wheel (an x86 hash passing for arm64 would show up here)."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--require-hashes", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
               *[arg for p in PLATFORMS[machine] for arg in ("--platform", p)], "-d", str(tmp_path), "-r", str(LOCK)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    wheels = {canonical(w.name.split("-")[0]): w.name for w in tmp_path.glob("*.whl")}
    assert set(wheels) == set(pins(LOCK)), f"downloaded {sorted(wheels)}, locked {sorted(pins(LOCK))}"
    compiled = {name: wheel for name, wheel in wheels.items() if not wheel.endswith("-any.whl")}
    assert {"numpy", "onnxruntime", "pillow"} <= set(compiled), compiled
    wrong = {name: wheel for name, wheel in compiled.items()
             if not wheel.endswith(f"_{machine}.whl") or not re.search(r"-cp3(12|10)-(cp312|abi3)-", wheel)}
    assert not wrong, f"not {machine} CPython 3.12 wheels: {wrong}"


@pytest.mark.slow
def test_a_file_whose_hash_is_not_in_the_lock_is_refused(tmp_path):
    """What --require-hashes buys: a wheel that differs from the locked one fails the build."""
    text = LOCK.read_text()
    block = re.search(r"^jmespath==.*?(?=^\S)", text, re.MULTILINE | re.DOTALL)[0]  # its pin, hashes and comment
    tampered = tmp_path / "requirements.lock"
    tampered.write_text(text.replace(block, HASH.sub("--hash=sha256:" + "0" * 64, block)))
    with pytest.raises(DockerfileError, match="(?i)hash"):
        pip_target_install(tmp_path / "target", ["--require-hashes", "--no-deps", "-r", str(tampered)])


CI_LOCKS = ROOT / ".ci" / "locks"
CI_INSTALL = ROOT / ".ci" / "install"
TOOLS = {"sam-cli": ("aws-sam-cli", "sam"), "awscli": ("awscli", "aws"), "checkov": ("checkov", "checkov")}


@pytest.mark.parametrize("tool", list(TOOLS))
def test_each_tool_lock_pins_every_package_with_hashes(tool):
    lock, source = CI_LOCKS / f"{tool}.lock", CI_LOCKS / f"{tool}.in"
    lines = logical_lines(lock)
    assert len(lines) == len(pins(lock)) > 1  # one exact pin per logical line, dependencies included
    for line in lines:
        digests = [m["digest"] for m in HASH.finditer(line)]
        assert digests and all(len(d) == 64 for d in digests), f"{lock.name}: no sha256 for {line.split()[0]}"
        assert ";" not in line, f"{lock.name}: {line.split()[0]} has a platform marker: aarch64 would install differently"
    direct = pins(source)
    assert list(direct) == [TOOLS[tool][0]], direct
    assert all(pins(lock).get(name) == version for name, version in direct.items()), f"{source.name} -> {lock.name}"
    header = lock.read_text().splitlines()[:2]
    assert any(f"uv pip compile .ci/locks/{tool}.in" in line and "--generate-hashes" in line
               and "--python-version 3.11" in line and f"--output-file .ci/locks/{tool}.lock" in line
               for line in header), header


def test_the_install_script_installs_each_tool_venv_from_its_lock_with_hashes_required():
    script = CI_INSTALL.read_text()
    calls = re.findall(r"^install_locked (\S+) (\S+) (\S+)$", script, re.MULTILINE)
    assert sorted(calls) == sorted((f".venv/{tool}", f".ci/locks/{tool}.lock", command)
                                   for tool, (_, command) in TOOLS.items()), calls
    body = re.search(r"^install_locked\(\) \{.*?^\}", script, re.MULTILINE | re.DOTALL)
    assert body, "no install_locked function in .ci/install"
    installs = [line for line in body[0].splitlines() if "pip install" in line]
    assert len(installs) == 1 and all(flag in installs[0] for flag in ("--require-hashes", "--no-deps", '-r "$lock"'))
    # no tool installed by name and version alone, bypassing its lock
    assert not re.search(r"pip install[^\n]*(aws-sam-cli|awscli|checkov)==", script)
    # the emulator binary comes out of the same SAM CLI version the lock installs
    assert re.search(r"^SAM_CLI_VERSION=(\S+)$", script, re.MULTILINE)[1] == pins(CI_LOCKS / "sam-cli.lock")["aws-sam-cli"]


@pytest.mark.slow
@pytest.mark.parametrize("machine", list(PLATFORMS))
@pytest.mark.parametrize("tool", list(TOOLS))
def test_each_tool_lock_is_closed_for_each_architecture(tmp_path, tool, machine):
    """As for the image's lock: resolved with dependencies and hashes required, nothing is missing from
    the tool's lock for CPython 3.11 on either architecture (metadata only: --dry-run)."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
               "--require-hashes", "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
               "--target", str(tmp_path), *[arg for p in PLATFORMS[machine] for arg in ("--platform", p)],
               "-r", str(CI_LOCKS / f"{tool}.lock")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
