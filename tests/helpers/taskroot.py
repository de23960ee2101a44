"""The Lambda container image without Docker: its task root, assembled the way the Dockerfile says.

:func:`assemble_task_root` reads the ``Dockerfile`` (its ``ARG``, ``COPY``, ``RUN pip install`` and
``RUN python -m ...``, ``ENV`` and ``WORKDIR`` lines, in order), honours ``.dockerignore``, and builds ``/var/task`` in a
directory: the files the image would hold, the runtime requirements installed for the image's
Python (3.12) and platform with ``pip install --target``, byte-compiled by that Python.
:func:`install_runtime_client` puts ``awslambdaric`` in a second directory, standing in for the base image's
``/var/runtime``. Run the handler from those two
directories alone (``tests/test_image.py`` does, under Python 3.12 and the emulator) and a file or
module the Dockerfile forgets is a failure here, not in AWS.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from local.measure.cost import ZIP_UNZIPPED_LIMIT_BYTES

ROOT = Path(__file__).resolve().parents[2]
IMAGE_PYTHON = "3.12"  # public.ecr.aws/lambda/python:3.12
# The base image's environment the Dockerfile relies on.
# https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime
IMAGE_ENV = {"LAMBDA_TASK_ROOT": "/var/task", "LAMBDA_RUNTIME_DIR": "/var/runtime"}
# Amazon Linux 2023 (glibc 2.34) takes these manylinux wheels; lambda_onnx/requirements.lock is
# resolved for manylinux_2_34 too.
PLATFORMS = {"x86_64": ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64"),
             "aarch64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")}


class DockerfileError(ValueError):
    """The Dockerfile says something this assembler cannot reproduce faithfully."""


@dataclass
class Dockerfile:
    """The instructions of a Dockerfile that shape the task root."""

    base: str
    args: dict[str, str]  # ARG defaults
    steps: list[tuple[str, list[str]]]  # ("COPY" | "RUN" | "ENV" | "WORKDIR", words) in order, not yet expanded
    cmd: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)  # USER, EXPOSE, HEALTHCHECK: how it runs, not what it holds


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


# Instructions that change how the image runs, not the files it holds: recorded (Dockerfile.meta), not reproduced.
_METADATA = ("USER", "EXPOSE", "HEALTHCHECK")


def parse_dockerfile(path: Path) -> Dockerfile:
    """Parse the instructions the task root depends on; refuse any this module cannot reproduce."""
    base, args, steps, cmd, meta = "", {}, [], [], {}
    for line in _logical_lines(Path(path).read_text()):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            base = rest.split()[0]
        elif keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
        elif keyword in ("COPY", "RUN", "ENV", "WORKDIR"):
            steps.append((keyword, shlex.split(rest)))
        elif keyword == "CMD":
            cmd = json.loads(rest)
        elif keyword in _METADATA:
            meta[keyword] = rest
        elif keyword not in ("LABEL",):
            raise DockerfileError(f"{path}: {keyword} is not reproduced by tests/helpers/taskroot.py; extend it before using it")
    if not base:
        raise DockerfileError(f"{path}: no FROM line")
    return Dockerfile(base, args, steps, cmd, meta)


def expand(word: str, variables: dict[str, str]) -> str:
    """``${NAME}`` and ``$NAME`` as Docker expands them in COPY and RUN."""
    def value(match: re.Match[str]) -> str:
        name = match["braced"] or match["bare"]
        if name not in variables:
            raise DockerfileError(f"variable {name} is not defined (no ARG, no base image variable)")
        return variables[name]

    return re.sub(r"\$\{(?P<braced>\w+)\}|\$(?P<bare>\w+)", value, word)


class DockerIgnore:
    """``.dockerignore`` as Docker applies it: the last matching pattern wins, ``!`` re-includes,
    and a path is matched by its own name or by any of its parent directories."""

    def __init__(self, path: Path) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        if not path.is_file():
            return
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = str(PurePosixPath(line.lstrip("!").strip("/")))
            self.rules.append((include, re.compile(_glob_regex(pattern))))

    def excluded(self, relpath: str) -> bool:
        parts = PurePosixPath(relpath).parts
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for include, rule in self.rules:
            if any(rule.fullmatch(candidate) for candidate in candidates):
                excluded = not include
        return excluded


def _glob_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


@dataclass
class TaskRoot:
    """An assembled task root and what went into it."""

    path: Path
    handler: str  # the image's CMD
    copied: list[str]  # files copied from the build context (relative to the task root)
    env: dict[str, str] = field(default_factory=dict)  # the image's ENV instructions: the function sees them
    cmd: list[str] = field(default_factory=list)  # the image's CMD, whole
    image_root: str = IMAGE_ENV["LAMBDA_TASK_ROOT"]  # where ``path`` is in the image

    def size_mb(self) -> float:
        return directory_mb(self.path)

    def local_env(self) -> dict[str, str]:
        """The image's ENV with its paths under ``image_root`` made paths under ``path`` (PYTHONPATH, say)."""
        return {key: localise(value, PurePosixPath(self.image_root), self.path) for key, value in self.env.items()}


def localise(value: str, image_root: PurePosixPath, root: Path) -> str:
    """A path (or ``:``-separated paths) in the image as the same path in the assembled directory."""
    def one(part: str) -> str:
        path = PurePosixPath(part)
        return str(root / path.relative_to(image_root)) if path == image_root or image_root in path.parents else part

    return os.pathsep.join(one(part) for part in value.split(os.pathsep))


def directory_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def _sources(context: Path, ignore: DockerIgnore, source: str) -> tuple[Path, list[Path]]:
    """The files a COPY source stands for in the build context, as Docker would send them."""
    src = (context / source).resolve()
    if not src.is_relative_to(context):
        raise DockerfileError(f"COPY {source}: outside the build context {context}")
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else []
    files = [f for f in files if not ignore.excluded(f.relative_to(context).as_posix())]
    if not files:
        raise DockerfileError(f"COPY {source}: no such file in the build context {context} (or .dockerignore excludes it)")
    return src, files


def _copy(context: Path, ignore: DockerIgnore, source: str, destination: Path, into_dir: bool, root: Path) -> list[str]:
    """One COPY source: a file to ``destination`` (or into it when it ends with ``/``), a directory's
    contents into ``destination``; what ``.dockerignore`` excludes never reaches the image."""
    src, files = _sources(context, ignore, source)
    copied = []
    for file in files:
        if src.is_dir():
            target = destination / file.relative_to(src)
        else:
            target = destination / file.name if into_dir else destination
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)
        copied.append(target.relative_to(root).as_posix())
    return copied


def pip_target_install(target: Path, requirements: list[str], *, python_version: str = IMAGE_PYTHON,
                       machine: str | None = None, compile_with: Path | None = None) -> None:
    """``pip install --target`` of wheels for another Python and platform (the image's), from here.

    pip would byte-compile for the Python running it (not the image's), so it does not; given
    ``compile_with`` (the image's Python), the result is compiled with it, as pip in the image does.
    """
    platforms = PLATFORMS.get(machine or platform.machine())
    if platforms is None:
        raise DockerfileError(f"no Lambda platform for machine {machine or platform.machine()!r}")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-cache-dir",
               "--target", str(target), "--python-version", python_version, "--implementation", "cp",
               "--no-compile", "--only-binary=:all:", *[arg for p in platforms for arg in ("--platform", p)], *requirements]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise DockerfileError(f"pip install for Python {python_version} failed:\n{result.stderr[-2000:]}")
    if compile_with is not None:
        _compileall(compile_with, [str(target)])


def _compileall(python: Path, arguments: list[str]) -> None:
    result = subprocess.run([str(python), "-m", "compileall", "-q", *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        raise DockerfileError(f"compileall {' '.join(arguments)} failed:\n{(result.stdout + result.stderr)[-2000:]}")


def assemble_task_root(root: Path, *, context: Path = ROOT, dockerfile: Path | None = None,
                       build_args: dict[str, str] | None = None, python: Path | None = None,
                       machine: str | None = None, image_root: str = IMAGE_ENV["LAMBDA_TASK_ROOT"],
                       image_env: dict[str, str] | None = None, dockerignore: Path | None = None) -> TaskRoot:
    """Build the image's ``$LAMBDA_TASK_ROOT`` in ``root``, following the Dockerfile step by step.

    ``context`` is the build context (the repository root for ``sam build``); ``build_args``
    override ARG defaults like ``--build-arg``; ``python`` is the image's interpreter (found if not
    given), which byte-compiles as it would in the image. Only ``COPY`` into the task root,
    ``RUN pip install ... --target $LAMBDA_TASK_ROOT -r FILE`` (``--require-hashes`` and ``--no-deps``
    passed on, so a hash lock is checked as in the image), ``RUN python -m MODULE`` (run by the
    image's Python in the task root), ``ENV KEY=VALUE`` and ``WORKDIR $LAMBDA_TASK_ROOT`` are
    reproduced; anything else raises :class:`DockerfileError` rather than being silently skipped.

    Another image (the server's, ``deploy/server/Dockerfile``) gives the directory its files live in
    (``image_root``, ``/app``), the base image's variables it relies on (``image_env``) and its ignore
    file (``dockerignore``, as BuildKit reads ``<Dockerfile>.dockerignore``).
    """
    context, root = Path(context).resolve(), Path(root).resolve()
    spec = parse_dockerfile(dockerfile or context / "Dockerfile")
    ignore = DockerIgnore(dockerignore or context / ".dockerignore")
    variables = {**(IMAGE_ENV if image_env is None else image_env), **spec.args, **(build_args or {})}
    task_root = PurePosixPath(image_root)

    def local(container_path: str) -> Path:
        path = PurePosixPath(container_path)
        if path != task_root and task_root not in path.parents:
            raise DockerfileError(f"{container_path} is outside the task root {task_root}; not reproduced here")
        return root / path.relative_to(task_root)

    python = python or find_python(IMAGE_PYTHON)
    for keyword, words in spec.steps:  # every source is in the context before anything slow runs
        if keyword == "COPY":
            for source in words[:-1]:
                _sources(context, ignore, expand(source, variables))
    root.mkdir(parents=True, exist_ok=True)
    copied: list[str] = []
    env: dict[str, str] = {}
    workdir = None
    for keyword, raw_words in spec.steps:
        words = [expand(word, variables) for word in raw_words]
        if keyword == "ENV":  # KEY=VALUE pairs: for the function, and for the instructions after it
            for word in words:
                key, sep, value = word.partition("=")
                if not sep:
                    raise DockerfileError(f"ENV {' '.join(words)}: only the KEY=VALUE form is reproduced here")
                env[key], variables[key] = value, value
        elif keyword == "WORKDIR":
            if PurePosixPath(words[0]) != task_root:
                raise DockerfileError(f"WORKDIR {words[0]}: only the task root {task_root} is reproduced here")
            workdir = root
        elif keyword == "COPY":
            if any(word.startswith("--") for word in words):
                raise DockerfileError(f"COPY {' '.join(words)}: flags are not reproduced here")
            *sources, destination = words
            into_dir = destination.endswith("/") or len(sources) > 1
            for source in sources:
                copied += _copy(context, ignore, source, local(destination), into_dir, root)
        elif words[:3] == ["python", "-m", "compileall"]:
            _compileall(python, [word if word.startswith("-") else str(local(word)) for word in words[3:] if word != "-q"])
        elif words[:2] == ["python", "-m"]:
            if workdir is None:
                raise DockerfileError(f"RUN {' '.join(words)}: needs WORKDIR {task_root} before it (python -m imports from the cwd)")
            _run_module(python, [str(local(w)) if w.startswith(str(task_root)) else w for w in words[2:]], workdir,
                        {key: localise(value, task_root, root) for key, value in env.items()})
        else:
            _run_pip(words, local, python, machine)
    return TaskRoot(root, spec.cmd[0] if spec.cmd else "", copied, env, spec.cmd, str(task_root))


def _run_module(python: Path, arguments: list[str], cwd: Path, env: dict[str, str]) -> None:
    """``RUN python -m MODULE ...`` with the image's Python in the task root: a failure fails the build."""
    result = subprocess.run([str(python), "-m", *arguments], cwd=cwd, capture_output=True, text=True,
                            env={"PATH": os.environ["PATH"], **env})
    if result.returncode != 0:
        raise DockerfileError(f"RUN python -m {' '.join(arguments)} failed:\n{(result.stdout + result.stderr)[-2000:]}")


# pip flags of the Dockerfile that are passed on as they are: a hash-locked install behaves the same
# for another platform (every wheel of a locked version has its hash in the lock).
_PIP_FLAGS_KEPT = ("--require-hashes", "--no-deps")


def _run_pip(words: list[str], local, python: Path, machine: str | None) -> None:
    if words[:2] != ["pip", "install"]:
        raise DockerfileError(f"RUN {' '.join(words)}: only `pip install` and `python -m compileall` are reproduced here")
    target, files, kept, passthrough = None, [], [], []
    options = iter(words[2:])
    for word in options:
        if word == "--target":
            target = next(options)
        elif word.startswith("--target="):
            target = word.split("=", 1)[1]
        elif word == "-r":
            files.append(local(next(options)))
        elif word in ("--no-cache-dir", "--only-binary=:all:"):
            continue  # applied anyway
        elif word in _PIP_FLAGS_KEPT:
            kept.append(word)
        else:
            passthrough.append(word)
    if target is None or not files:
        raise DockerfileError(f"RUN {' '.join(words)}: expected `pip install --target DIR -r FILE`")
    if passthrough:
        raise DockerfileError(f"RUN {' '.join(words)}: pip arguments {passthrough} are not reproduced here")
    for file in files:
        if not Path(file).is_file():
            raise DockerfileError(f"pip -r {file}: the file is not in the image yet (COPY it first)")
    pip_target_install(local(target), [*kept, *(arg for file in files for arg in ("-r", str(file)))], machine=machine,
                       compile_with=python)


def install_runtime_client(target: Path, version: str | None = None, python: Path | None = None) -> Path:
    """awslambdaric for the image's Python in ``target`` (the base image's ``/var/runtime``);
    the version pinned in ``local/requirements.txt`` unless given."""
    if version is None:
        pins = (ROOT / "local" / "requirements.txt").read_text()
        match = re.search(r"^awslambdaric==(\S+)", pins, re.MULTILINE)
        if match is None:
            raise DockerfileError("local/requirements.txt pins no awslambdaric version")
        version = match[1]
    pip_target_install(Path(target), [f"awslambdaric=={version}"], compile_with=python)
    return Path(target)


def find_python(version: str = IMAGE_PYTHON) -> Path:
    """An interpreter of ``version`` on this machine (PATH, then pyenv's versions), or a clear error."""
    pyenv = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python{version}")))
    candidates = [shutil.which(f"python{version}"), *pyenv, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    for candidate in candidates:
        if not candidate or not Path(candidate).is_file():
            continue
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return Path(candidate)
    raise FileNotFoundError(f"no Python {version} found (PATH, ~/.pyenv/versions): the image runs Python {version}")


# --- the zip package (template.yaml's ClassifierZipFunction, built by the Makefile) ------------------

# Lambda's limit on a function's unzipped size, its layers included ("250 MB"); the Makefile checks
# the same figure. https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
UNZIPPED_LIMIT_BYTES = ZIP_UNZIPPED_LIMIT_BYTES  # Lambda's, stated once (local.measure.cost)
ZIP_TARGET = "build-ClassifierZipFunction"


def build_zip_package(artifacts: Path, model: Path, *, architecture: str = "x86_64") -> subprocess.CompletedProcess:
    """The Makefile's target, run as `sam build` runs it (``make build-<LogicalId>`` with ``ARTIFACTS_DIR``),
    for ``model`` (its sidecar and canary beside it); this Python's pip downloads the wheels."""
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), ZIP_TARGET, f"ARTIFACTS_DIR={artifacts}",
                           f"MODEL={model}", f"PYTHON={sys.executable}", f"ARCHITECTURE={architecture}"],
                          capture_output=True, text=True, timeout=900)


def model_files(model: Path) -> list[Path]:
    """What the package holds of a model: the ONNX file, its sidecar and its canary (``model/`` in the package)."""
    from lambda_onnx.canary import canary_path
    from lambda_onnx.sidecar import sidecar_path

    return [Path(model), sidecar_path(model), canary_path(model)]


def tree_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` as Lambda counts an unzipped package: each file's size."""
    return sum(f.lstat().st_size for f in Path(path).rglob("*") if f.is_file() and not f.is_symlink())


@dataclass(frozen=True)
class PackageSize:
    """The unzipped size of a zip package by part, and whether it fits Lambda's limit."""

    dependencies: int  # the lock's runtime wheels for CPython 3.12 on Lambda's Linux, unpacked
    core: int  # lambda_onnx/
    model: int  # model/: the ONNX file, its sidecar, its canary

    @property
    def total(self) -> int:
        return self.dependencies + self.core + self.model

    @property
    def fits(self) -> bool:
        return self.total <= UNZIPPED_LIMIT_BYTES

    def with_model(self, model: Path) -> PackageSize:
        """The same package holding ``model`` instead."""
        return PackageSize(self.dependencies, self.core, sum(f.stat().st_size for f in model_files(model)))

    @classmethod
    def of(cls, package: Path) -> PackageSize:
        core, model = tree_bytes(Path(package) / "lambda_onnx"), tree_bytes(Path(package) / "model")
        return cls(tree_bytes(package) - core - model, core, model)


def zip_package(package: Path, archive: Path) -> int:
    """Zip ``package`` as `sam deploy` uploads it; returns the unzipped size the archive declares (what Lambda checks)."""
    import zipfile

    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for file in sorted(p for p in Path(package).rglob("*") if p.is_file()):
            out.write(file, file.relative_to(package).as_posix())
    with zipfile.ZipFile(archive) as check:
        return sum(info.file_size for info in check.infolist())


def install_managed_runtime(target: Path, python: Path | None = None) -> Path:
    """What Lambda's python3.12 managed runtime puts on the path beside a zip package (``/var/runtime``):
    the runtime client and the SnapStart hooks library, at the versions pinned for the tests."""
    install_runtime_client(target, python=python)
    match = re.search(r"^snapshot-restore-py==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    if match is None:
        raise DockerfileError("requirements.txt pins no snapshot-restore-py version")
    pip_target_install(Path(target), [f"snapshot-restore-py=={match[1]}"], compile_with=python)
    return Path(target)
