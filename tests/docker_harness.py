"""``make test-docker``: the Docker sandbox backend against a real engine, from nothing to a verified run.

1. **Engine.** ``DOCKER_HOST`` or the default socket when an engine answers there; otherwise, as root, a
   private ``dockerd`` (``apt-get install docker.io`` when missing) with its own socket and exec root, no
   bridge and no iptables rules, and a data root kept under ``$INTERP_AGENT_DOCKER_STATE/docker`` (default
   ``/var/lib/interp-agent``) so images are cached across runs. A lock keeps two runs off one data root.
2. **Base image.** ``INTERP_AGENT_DOCKER_BASE`` if set; else ``python:3.11-slim`` when the engine has it or
   can pull it; else a Debian bookworm made with ``debootstrap`` (python3, venv, pip), tagged by its recipe's
   hash and reused.
3. **Sandbox image** (:mod:`sandbox.docker_image`, a content-hash tag): this host's pip settings are carried
   over — its CA bundle (a TLS-re-signing proxy), the torch wheel its find-links hold (``pip download
   --no-index``), this venv's torch version and package versions (``pip freeze`` as constraints, so both
   backends compute with the same libraries) — and builds use the host network when the engine is ours.
4. **Tests** with ``INTERP_AGENT_TEST_BACKENDS=docker``: the backend's contract tests against the engine
   (``tests/test_sandbox_docker.py``), the attack suite (``tests/security``), and the toy-IOI investigation
   on both backends with replay and report (``tests/test_docker_investigation.py``). Each group must pass
   at least one test: a run where everything skipped fails.
5. **Cleanup**: a private engine is stopped (its netns mount unmounted, its folders removed); older sandbox
   images on it are pruned. Nothing is left running.

``python -m tests.docker_harness --check`` starts nothing: it prints why this machine cannot run it (exit 3)
or what it would use (exit 0). Extra arguments after ``--`` go to pytest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from sandbox.errors import SandboxError

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
DEFAULT_BASE = "python:3.11-slim"
DEBIAN_MIRROR = os.environ.get("INTERP_AGENT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBOOTSTRAP = ("bookworm", "minbase", "python3,python3-venv,python3-pip,ca-certificates")
TEST_GROUPS = {
    "docker contract": "tests/test_sandbox_docker.py",
    "attack suite": "tests/security",
    "investigation": "tests/test_docker_investigation.py",
}


class HarnessError(Exception):
    """A step that cannot go on: printed as ``error: <what> — <fix>``, exit 2."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(f"{what} — {fix}")


def say(msg: str) -> None:
    print(f"[test-docker] {msg}", flush=True)


def state_dir() -> Path:
    default = "/var/lib/interp-agent" if os.geteuid() == 0 else str(Path.home() / ".cache" / "interp-agent")
    return Path(os.environ.get("INTERP_AGENT_DOCKER_STATE", default))


def _client(host: str | None = None, timeout: int = 600):
    import docker

    return docker.DockerClient(base_url=host, timeout=timeout) if host else docker.from_env(timeout=timeout)


def reachable(host: str | None = None) -> bool:
    try:
        _client(host, timeout=10).ping()
        return True
    except Exception:  # the SDK raises several unrelated types when there is no engine
        return False


def can_run() -> tuple[bool, str]:
    """Whether this machine can run test-docker, and what it would use (or why not)."""
    if reachable():
        return True, f"the Docker engine at {os.environ.get('DOCKER_HOST') or 'the default socket'}"
    if os.geteuid() != 0:
        return False, ("no Docker engine answers (DOCKER_HOST unset or unreachable, no /var/run/docker.sock) "
                       "and only root can start a private one")
    if not shutil.which("dockerd"):
        known = shutil.which("apt-cache") and subprocess.run(["apt-cache", "show", "docker.io"],
                                                             capture_output=True).returncode == 0
        if not known:
            return False, ("no Docker engine answers, dockerd is not installed and apt knows no docker.io package "
                           "to install")
        return True, "a private dockerd started for the run (root; docker.io installed with apt first)"
    return True, "a private dockerd started for the run (root)"


def apt_install(*packages: str) -> None:
    """``apt-get install -y`` (after an update if the first try fails); root only."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise HarnessError(f"{', '.join(packages)} missing", fix=f"apt-get install -y {' '.join(packages)}")
    say(f"installing {' '.join(packages)} with apt-get")
    cmd = ["apt-get", "install", "-y", "-q", *packages]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise HarnessError(f"apt-get could not install {' '.join(packages)}: {r.stderr.strip()[-300:]}",
                               fix=f"install them yourself: apt-get install -y {' '.join(packages)}")


# ------------------------------------------------------------------------------------------------ engine


class PrivateEngine:
    """A dockerd of our own: socket, exec root and pidfile in a fresh /tmp folder; the data root kept."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.data_root = state / "docker"
        self.tmp: Path | None = None
        self.proc: subprocess.Popen | None = None
        self._lock = None

    @property
    def host(self) -> str:
        assert self.tmp is not None
        return f"unix://{self.tmp / 'docker.sock'}"

    def start(self) -> None:
        if not shutil.which("dockerd"):
            apt_install("docker.io")
        self.data_root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.state / "docker.lock", "w")  # noqa: SIM115  (held for the engine's life)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another test-docker run holds {self.state / 'docker.lock'}; waiting for it")
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.tmp = Path(tempfile.mkdtemp(prefix="iad-", dir="/tmp"))  # short: unix socket paths are capped
        argv = ["dockerd", "--iptables=false", "--ip-masq=false", "--bridge=none",
                "--data-root", str(self.data_root), "--exec-root", str(self.tmp / "exec"),
                "--pidfile", str(self.tmp / "dockerd.pid"), "-H", self.host]
        if os.environ.get("INTERP_AGENT_DOCKER_STORAGE_DRIVER"):
            argv += ["--storage-driver", os.environ["INTERP_AGENT_DOCKER_STORAGE_DRIVER"]]
        log = open(self.tmp / "dockerd.log", "wb")  # noqa: SIM115  (dockerd writes it while it runs)
        t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        while not reachable(self.host):
            if self.proc.poll() is not None or time.monotonic() - t0 > 90:
                tail = (self.tmp / "dockerd.log").read_text(errors="replace").strip().splitlines()[-5:]
                raise HarnessError(f"dockerd did not start: {' | '.join(tail)}",
                                   fix="see its log; try INTERP_AGENT_DOCKER_STORAGE_DRIVER=vfs")
            time.sleep(0.5)
        info = _client(self.host).info()
        say(f"engine: private dockerd {info.get('ServerVersion')} ({info.get('Driver')} storage, data root "
            f"{self.data_root}) ready in {time.monotonic() - t0:.1f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.tmp is not None:
            for pid in _pids_mentioning(str(self.tmp)):  # a containerd or shim dockerd left behind
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for root in (self.tmp, self.data_root):  # the netns mount (and any container mount) outlive dockerd
                for mnt in _mounts_under(root):
                    if subprocess.run(["umount", mnt], capture_output=True).returncode != 0:
                        subprocess.run(["umount", "-l", mnt], capture_output=True)
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    return sorted((p for p in points if p.startswith(prefix)), key=lambda p: -p.count("/"))


def _pids_mentioning(token: str) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            with contextlib.suppress(OSError):
                if token.encode() in (p / "cmdline").read_bytes():
                    out.append(int(p.name))
    return out


@contextlib.contextmanager
def engine() -> Iterator[tuple[str | None, bool]]:
    """``(DOCKER_HOST value or None for the default, whether it is ours)``; a private engine stops on exit."""
    if reachable():
        say(f"engine: {os.environ.get('DOCKER_HOST') or 'the default socket'} (already running; left running)")
        yield os.environ.get("DOCKER_HOST"), False
        return
    ok, why = can_run()
    if not ok:
        raise HarnessError(why, fix="start dockerd, point DOCKER_HOST at an engine, or run as root")
    eng = PrivateEngine(state_dir())
    try:
        eng.start()
        yield eng.host, True
    finally:
        t0 = time.monotonic()
        if eng.proc is not None and reachable(eng.host):  # an interrupted run's containers: their pytest is gone
            from sandbox.docker_backend import reap_orphans

            with contextlib.suppress(Exception):
                if removed := reap_orphans(_client(eng.host, timeout=60)):
                    say(f"removed {len(removed)} sandbox container(s) an interrupted test left")
        eng.stop()
        say(f"engine stopped and cleaned up in {time.monotonic() - t0:.1f} s")


# ------------------------------------------------------------------------------------------------ images


def _has_image(client, ref: str) -> bool:
    import docker.errors

    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def _pull(client, ref: str) -> bool:
    try:
        client.images.pull(ref)
        return True
    except Exception:  # no registry reachable (offline machine): fall through to debootstrap
        return False


def base_image(client) -> str:
    """The image the sandbox image builds FROM (see the module doc, step 2)."""
    want = os.environ.get("INTERP_AGENT_DOCKER_BASE")
    if want:
        if _has_image(client, want) or _pull(client, want):
            return want
        raise HarnessError(f"base image {want!r} is neither on the engine nor pullable",
                           fix="docker pull it, or unset INTERP_AGENT_DOCKER_BASE to build a Debian one")
    recipe = "|".join((*DEBOOTSTRAP, DEBIAN_MIRROR))
    tag = f"interp-agent-base:{DEBOOTSTRAP[0]}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    for ref in (DEFAULT_BASE, tag):
        if _has_image(client, ref):
            say(f"base image: {ref} (cached)")
            return ref
    t0 = time.monotonic()
    if _pull(client, DEFAULT_BASE):
        say(f"base image: pulled {DEFAULT_BASE} in {time.monotonic() - t0:.1f} s")
        return DEFAULT_BASE
    say(f"base image: no registry reachable; building {tag} with debootstrap ({DEBIAN_MIRROR})")
    debootstrap_image(client, tag)
    say(f"base image: {tag} built in {time.monotonic() - t0:.1f} s")
    return tag


def debootstrap_image(client, tag: str) -> None:
    if os.geteuid() != 0:
        raise HarnessError("building a base image with debootstrap needs root",
                           fix="run as root, or set INTERP_AGENT_DOCKER_BASE to an image with python >= 3.11")
    if not shutil.which("debootstrap"):
        apt_install("debootstrap")
    suite, variant, include = DEBOOTSTRAP
    work = Path(tempfile.mkdtemp(prefix="iabase-", dir=str(state_dir())))
    try:
        root = work / "rootfs"
        r = subprocess.run(["debootstrap", f"--variant={variant}", f"--include={include}", suite, str(root),
                            DEBIAN_MIRROR], capture_output=True, text=True)
        if r.returncode != 0:
            raise HarnessError(f"debootstrap failed: {(r.stdout + r.stderr).strip()[-400:]}",
                               fix="check that apt reaches the mirror (INTERP_AGENT_DEBIAN_MIRROR)")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):  # packages and indexes: not needed
            for p in (root / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        tar = work / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tar), "."], check=True)
        repo, _, version = tag.partition(":")
        client.api.import_image_from_file(str(tar), repository=repo, tag=version,
                                          changes=["ENV LANG=C.UTF-8", 'CMD ["python3"]'])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "pip", *args], capture_output=True, text=True)


def host_pip_settings(state: Path, host_network: bool) -> dict[str, str]:
    """``INTERP_AGENT_DOCKER_*`` settings carried over from this host (each only when not set already)."""
    import torch

    env: dict[str, str] = {}
    spec = os.environ.get("INTERP_AGENT_DOCKER_TORCH_SPEC") or f"torch=={torch.__version__}"
    env["INTERP_AGENT_DOCKER_TORCH_SPEC"] = spec
    if "INTERP_AGENT_DOCKER_CA_BUNDLE" not in os.environ:
        certs = re.findall(r"\.cert='([^']+)'", _pip("config", "list").stdout)
        cert = os.environ.get("PIP_CERT") or (certs[0] if certs else "")
        if cert and Path(cert).is_file():
            env["INTERP_AGENT_DOCKER_CA_BUNDLE"] = cert
    if "INTERP_AGENT_DOCKER_WHEELS" not in os.environ:
        wheels = state / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        r = _pip("download", "--no-deps", "--no-index", "--only-binary=:all:", "-d", str(wheels), spec)
        got = re.findall(r"(?:Saved|File was already downloaded) (\S+\.whl)", r.stdout)
        if r.returncode == 0 and got:
            env["INTERP_AGENT_DOCKER_WHEELS"] = got[-1]
            env.setdefault("INTERP_AGENT_DOCKER_TORCH_INDEX", os.environ.get("INTERP_AGENT_DOCKER_TORCH_INDEX", ""))
    if "INTERP_AGENT_DOCKER_CONSTRAINTS" not in os.environ:
        frozen = _pip("freeze", "--exclude-editable").stdout.splitlines()
        pins = sorted(ln for ln in frozen if re.fullmatch(r"[A-Za-z0-9_.\-]+==[^\s;@]+", ln)
                      and not ln.lower().startswith(("torch==", "interp-agent==")))
        text = "\n".join(pins) + "\n"
        path = state / f"constraints-{hashlib.sha256(text.encode()).hexdigest()[:12]}.txt"
        path.write_text(text)
        env["INTERP_AGENT_DOCKER_CONSTRAINTS"] = str(path)
    if host_network and "INTERP_AGENT_DOCKER_BUILD_NETWORK" not in os.environ:
        env["INTERP_AGENT_DOCKER_BUILD_NETWORK"] = "host"
    return env


def sandbox_image(client, ours: bool) -> str:
    from sandbox import docker_image

    cfg = docker_image.ImageConfig.from_env()
    tag = docker_image.image_tag(cfg)
    if _has_image(client, tag):
        say(f"sandbox image: {tag} (cached)")
        return tag
    say(f"sandbox image: building {tag} (base {cfg.base}, {cfg.torch_spec}"
        f"{', wheels ' + ', '.join(p.name for p in cfg.wheels) if cfg.wheels else ''}"
        f"{', extra CA ' + str(cfg.ca_bundle) if cfg.ca_bundle else ''}"
        f"{', network ' + cfg.network if cfg.network else ''})")
    t0 = time.monotonic()
    log_path = state_dir() / "last-build.log"
    with open(log_path, "w") as log:
        def on_log(line: str) -> None:
            log.write(line + "\n")
            if line.startswith("Step "):
                say(f"  {time.monotonic() - t0:6.0f} s  {line[:110]}")

        docker_image.build_image(client, cfg, tag, on_log=on_log)
    say(f"sandbox image: built in {time.monotonic() - t0:.0f} s (log {log_path})")
    if ours:  # our engine only: drop older sandbox images (the build stages stay: they are the build cache)
        for img in client.images.list(name=docker_image.IMAGE_REPO):
            if tag not in img.tags:
                for t in img.tags:
                    with contextlib.suppress(Exception):
                        client.images.remove(t)
    return tag


# ------------------------------------------------------------------------------------------------ tests


def run_tests(extra: list[str]) -> int:
    junit = Path(tempfile.mkdtemp(prefix="ia-junit-")) / "docker.xml"
    env = dict(os.environ, INTERP_AGENT_TEST_BACKENDS="docker", HF_HUB_OFFLINE="1")
    cmd = [PY, "-m", "pytest", *TEST_GROUPS.values(), "-p", "no:cacheprovider", "-rs",
           f"--junitxml={junit}", *extra]
    say("tests: " + " ".join(cmd[3:]))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    try:
        rc = proc.wait()
    except BaseException:  # interrupted (SIGTERM from a CI timeout): pytest gone (so its containers are orphans
        proc.kill()        # the engine's cleanup removes), and no junit folder left behind
        proc.wait()
        shutil.rmtree(junit.parent, ignore_errors=True)
        raise
    counts = {g: {"passed": 0, "skipped": 0, "failed": 0} for g in TEST_GROUPS}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            path = case.get("classname", "").replace(".", "/")
            group = next((g for g, p in TEST_GROUPS.items() if path.startswith(p.removesuffix(".py"))), None)
            if group is None:
                continue
            kind = ("skipped" if case.find("skipped") is not None else
                    "failed" if case.find("failure") is not None or case.find("error") is not None else "passed")
            counts[group][kind] += 1
        shutil.rmtree(junit.parent, ignore_errors=True)
    for g, c in counts.items():
        say(f"  {g:16s} {c['passed']:3d} passed, {c['skipped']:2d} skipped, {c['failed']:2d} failed")
    empty = [g for g, c in counts.items() if c["passed"] == 0]
    if rc == 0 and empty and not extra:
        say(f"FAILED: no test passed in {', '.join(empty)} (everything skipped?)")
        return 1
    return rc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    if "--check" in argv:
        ok, why = can_run()
        print(f"can run make test-docker: {why}" if ok else why)
        return 0 if ok else 3
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    t0 = time.monotonic()
    try:
        with engine() as (host, ours):
            if host:
                os.environ["DOCKER_HOST"] = host
            client = _client(host)
            state = state_dir()
            state.mkdir(parents=True, exist_ok=True)
            os.environ.setdefault("INTERP_AGENT_DOCKER_BASE", base_image(client))
            no_bridge = not client.networks.list(names=["bridge"])  # e.g. our engine (--bridge=none)
            for k, v in host_pip_settings(state, host_network=ours or no_bridge).items():
                os.environ.setdefault(k, v)
            settings = {k: v for k, v in sorted(os.environ.items()) if k.startswith("INTERP_AGENT_DOCKER_")}
            say("image settings (export them to reuse this image): "
                + " ".join(f"{k}={shlex.quote(v)}" for k, v in settings.items()))
            t_img = time.monotonic()
            tag = sandbox_image(client, ours)
            t_tests = time.monotonic()
            say(f"images ready in {t_tests - t_img:.0f} s; running the tests against {tag}")
            rc = run_tests(extra)
            say(f"tests took {time.monotonic() - t_tests:.0f} s")
    except (HarnessError, SandboxError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        say("interrupted; the engine was stopped")
        return 130
    say(f"{'passed' if rc == 0 else 'FAILED'}; total {time.monotonic() - t0:.0f} s")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
