"""podman for the image tests: the engine, a base image, the project's image, containers.

Everything a test session makes (images, containers, pods, networks, volumes) carries the
label ``payments-service-test=<session token>`` or a name with that token, and
``Podman.clean_up`` removes exactly those: nothing the session did not make is touched.

Machine set-up (what ``.ci/run`` does): podman from Debian's packages, run as root, with a
containers.conf named by ``CONTAINERS_CONF`` (runc, cgroupfs, a file events log and ulimits
the engine may set). When ``CONTAINERS_CONF`` is unset and ``.ci/run`` wrote
``build/containers.conf``, that file is used.

The base image: ``PYTHON_IMAGE`` names one to build on (pulled when missing, e.g.
``docker.io/library/python:3.11.13-slim-bookworm`` where a registry is reachable).
Without it a Debian 12 base with Debian's Python 3.11 is made by mmdebstrap from this
machine's own Debian sources and ``podman import``-ed; its tarball is kept in
``build/image-base/`` under a hash of its recipe, so later sessions only import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.clients import health
from tests.support.environment import ROOT, require, require_tool

LABEL = "payments-service-test"
CI_CONTAINERS_CONF = ROOT / "build" / "containers.conf"
BASE_CACHE = ROOT / "build" / "image-base"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: This machine's Debian sources, deb822 first (mmdebstrap reads either form).
SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
#: Debian 12 with what the Dockerfile's stages use: python (venv), CA certificates,
#: /etc/services and time zones; no documentation, manual pages or translations.
BASE_RECIPE = (
    "--variant=minbase",
    "--include=python3,python3-venv,python-is-python3,ca-certificates,netbase,tzdata",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "bookworm",
)
#: podman's own log noise without systemd (it cannot arm timers for HEALTHCHECK).
SYSTEMD_NOISE = "unable to get systemd connection"
#: The infra image podman builds (and keeps) the first time it makes a pod.
PAUSE_IMAGE = "localhost/podman-pause"


class PodmanError(AssertionError):
    pass


@dataclass
class Podman:
    """The podman binary with this session's environment, token and label."""

    binary: str
    env: dict[str, str]
    token: str = field(default_factory=lambda: secrets.token_hex(4))
    #: Images this session pulled (removed at the end unless in use).
    pulled: list[str] = field(default_factory=list)
    #: (kind, name) of unlabelled objects this session made, e.g. ("volume", "...").
    owned: list[tuple[str, str]] = field(default_factory=list)
    #: Whether podman's pause image was there before this session.
    had_pause_image: bool = True

    @property
    def label(self) -> str:
        return f"{LABEL}={self.token}"

    def name(self, role: str) -> str:
        return f"{LABEL}-{self.token}-{role}"

    def run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise PodmanError(
                f"podman {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{quiet(result.stderr)}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--format", "json").stdout)

    def exec(self, container: str, *command: str, timeout: float = 30) -> str:
        return self.run("exec", container, *command, timeout=timeout).stdout

    def exists(self, kind: str, name: str) -> bool:
        return self.run(kind, "exists", name, check=False).returncode == 0

    def ids(self, kind: str) -> list[str]:
        """IDs of this session's objects of ``kind`` (container, pod, image, network, volume)."""
        listing = {
            "container": ["ps", "--all", "--external", "--quiet"],
            "pod": ["pod", "ps", "--quiet"],
            "image": ["images", "--all", "--quiet"],
            "network": ["network", "ls", "--quiet"],
            "volume": ["volume", "ls", "--quiet"],
        }[kind]
        output = self.run(*listing, "--filter", f"label={self.label}", check=False).stdout
        return sorted(set(output.split()))

    def clean_up(self) -> None:
        """Remove every pod, container, image, network and volume of this session."""
        for pod in self.ids("pod"):
            self.run("pod", "rm", "--force", "--time", "0", pod, check=False)
        for container in self.ids("container"):
            self.run("rm", "--force", "--volumes", "--time", "0", container, check=False)
        owned = [(kind, name) for kind, name in self.owned if self.exists(kind, name)]
        for kind in ("volume", "network"):
            for name in [*self.ids(kind), *(name for k, name in owned if k == kind)]:
                self.run(kind, "rm", "--force", name, check=False)
        images = self.ids("image")
        if images:
            self.run("rmi", "--force", *images, check=False, timeout=300)
        extra = [*self.pulled, *([] if self.had_pause_image else self.pause_images())]
        for image in extra:  # without --force: kept while anything uses it
            self.run("rmi", image, check=False)

    def pause_images(self) -> list[str]:
        return self.run("images", "--quiet", PAUSE_IMAGE, check=False).stdout.split()


def quiet(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if SYSTEMD_NOISE not in line)


def engine() -> Podman:
    """podman, able to run containers here; skip (fail under CI=true) when it is not."""
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env and CI_CONTAINERS_CONF.exists():
        env["CONTAINERS_CONF"] = str(CI_CONTAINERS_CONF)
    podman = Podman(require_tool("podman"), env)
    info = podman.run("info", "--format", "json", check=False, timeout=60)
    require(info.returncode == 0, f"the podman engine cannot start: {quiet(info.stderr)}")
    podman.had_pause_image = bool(podman.pause_images())
    return podman


def smoke_test(podman: Podman, image: str) -> None:
    """One container from ``image``: skip (fail under CI=true) when the engine cannot run it."""
    command = ["run", "--rm", "--label", podman.label, "--entrypoint", "python", image, "-c", ""]
    result = podman.run(*command, check=False, timeout=120)
    require(
        result.returncode == 0,
        f"podman cannot run a container here: {quiet(result.stderr)}"
        " (see .ci/run for the containers.conf this machine needs)",
    )


def base_image(podman: Podman) -> str:
    """The image given as the Dockerfile's PYTHON_IMAGE: $PYTHON_IMAGE, or one made here."""
    given = os.environ.get("PYTHON_IMAGE")
    if given:
        if not podman.exists("image", given):
            podman.run("pull", "--quiet", given, timeout=600)
            podman.pulled.append(given)
        smoke_test(podman, given)
        return given
    sources = next((path for path in SOURCES if path.exists()), None)
    require(sources is not None, "no Debian sources list to build the base image from")
    assert sources is not None
    recipe = hashlib.sha256("\n".join([*BASE_RECIPE, sources.read_text()]).encode())
    digest = recipe.hexdigest()[:16]
    tarball = BASE_CACHE / f"{digest}.tar"
    if not tarball.exists():
        mmdebstrap = require_tool("mmdebstrap")
        BASE_CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial.tar")
        result = subprocess.run(
            [mmdebstrap, "--quiet", *BASE_RECIPE, str(partial), str(sources)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise PodmanError(f"mmdebstrap failed:\n{result.stdout}\n{result.stderr}")
        partial.rename(tarball)
    reference = f"localhost/{LABEL}-base:{digest}"
    labelled = ["--change", f"LABEL {podman.label}"]
    podman.run("import", "--quiet", *labelled, str(tarball), reference, timeout=300)
    smoke_test(podman, reference)
    return reference


@dataclass
class Image:
    reference: str
    base: str
    build_seconds: float
    inspect: dict[str, Any]

    @property
    def size(self) -> int:
        return int(self.inspect["Size"])


def build_image(podman: Podman, base: str) -> Image:
    """``podman build`` of the project's Dockerfile on ``base``, labelled as this session's.

    ``--format docker`` keeps HEALTHCHECK (the OCI format has no such field), and the host's
    CA bundle is mounted read-only over the image's for the RUN steps, so pip trusts the
    same TLS as this machine.
    """
    reference = f"localhost/{LABEL}:{podman.token}"
    command = ["build", "--quiet", "--format", "docker", "--pull=never", "--force-rm"]
    command += ["--label", podman.label, "--build-arg", f"PYTHON_IMAGE={base}"]
    if HOST_CA_BUNDLE.exists():
        command += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    command += ["--tag", reference, "--file", str(ROOT / "Dockerfile"), str(ROOT)]
    started = time.monotonic()
    podman.run(*command, timeout=900)
    seconds = time.monotonic() - started
    (inspect,) = podman.json("image", "inspect", reference)
    return Image(reference, base, seconds, inspect)


def layers(podman: Podman, image: Image) -> list[tuple[str, int]]:
    """(instruction, bytes) of each filesystem layer of ``image``, oldest first."""
    history = image.inspect["History"]
    sizes = [entry["size"] for entry in reversed(podman.json("history", image.reference))]
    assert len(sizes) == len(history)
    return [
        (re.sub(r"^/bin/sh -c (#\(nop\) )?", "", entry.get("created_by", "")).strip(), size)
        for entry, size in zip(history, sizes, strict=True)
        if not entry.get("empty_layer", False)
    ]


def compressed_size(podman: Podman, image: Image, directory: Path) -> int:
    """Bytes of the image's gzip-compressed layers and config, as a registry would hold it."""
    target = directory / "image"
    save = ["save", "--quiet", "--format", "docker-dir", "--compress", "--output", str(target)]
    podman.run(*save, image.reference, timeout=300)
    try:
        return sum(path.stat().st_size for path in target.iterdir())
    finally:
        shutil.rmtree(target)


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def wait_serving(target: str, started: float, service: str = "", timeout: float = 60) -> float:
    """Seconds from ``started`` (a time.monotonic()) until ``target`` answers SERVING."""
    deadline = started + timeout
    while time.monotonic() < deadline:
        if health(target, service, timeout=1.0) == "SERVING":
            return time.monotonic() - started
        time.sleep(0.05)
    raise PodmanError(f"{target} did not answer SERVING within {timeout} s")


def container_pid(podman: Podman, container: str) -> int:
    return int(podman.run("inspect", "--format", "{{.State.Pid}}", container).stdout)


def proc_status(podman: Podman, container: str) -> dict[str, str]:
    """/proc/1/status of the container's main process, as seen inside it."""
    text = podman.exec(container, "cat", "/proc/1/status")
    return {
        key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())
    }


def assert_no_privileges(status: dict[str, str], uid: int, gid: int) -> None:
    """The process runs as uid:gid (real, effective, saved, fs) with no capability at all."""
    assert status["Uid"].split() == [str(uid)] * 4, status["Uid"]
    assert status["Gid"].split() == [str(gid)] * 4, status["Gid"]
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[capabilities], 16) == 0, f"{capabilities} {status[capabilities]}"


def assert_read_only_root(podman: Podman, container: str) -> None:
    """Writing to the image's files fails; /tmp takes a file."""
    probe = podman.run("exec", container, "touch", "/opt/venv/probe", check=False)
    assert probe.returncode != 0, probe.stderr
    assert "Read-only file system" in probe.stderr, probe.stderr
    podman.exec(container, "sh", "-c", "echo probe > /tmp/probe && rm /tmp/probe")
