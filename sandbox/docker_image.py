"""The Docker sandbox's image: build settings, a content-hash tag, and the build itself.

The image is built from ``sandbox/docker/Dockerfile`` with a context holding only the project's files (as
``.dockerignore`` lists them) plus the extra CA bundle and wheels named in :class:`ImageConfig`. Its tag is
``interp-agent-sandbox:<hash>`` of that context and the build arguments, so a changed file, base or torch
spec is a new tag (built when missing) and an unchanged checkout reuses the image it built before.

Settings come from the environment (:meth:`ImageConfig.from_env`), so the CLI, the tests and a user's shell
agree on one image:

==================================  ===========================================================================
``INTERP_AGENT_DOCKER_BASE``        base image (default ``python:3.11-slim``); needs python >= 3.11 with venv
``INTERP_AGENT_DOCKER_TORCH_SPEC``  torch requirement (default ``torch==2.13.0``)
``INTERP_AGENT_DOCKER_TORCH_INDEX`` index for torch (default PyTorch's CPU index; empty: the package index)
``INTERP_AGENT_DOCKER_PIP_INDEX``   package index for the rest (default pypi.org)
``INTERP_AGENT_DOCKER_CA_BUNDLE``   PEM file of extra CA certificates pip trusts during the build
``INTERP_AGENT_DOCKER_WHEELS``      wheel files or folders of wheels offered first (``:``-separated)
``INTERP_AGENT_DOCKER_CONSTRAINTS`` pip constraints file for the dependencies (e.g. a venv's ``pip freeze``)
``INTERP_AGENT_DOCKER_BUILD_NETWORK``  network of the build's RUN steps (``host`` behind a host-only proxy)
``INTERP_AGENT_DOCKER_IMAGE``       use this tag instead of the content-hash one
==================================  ===========================================================================

``python -m sandbox.docker_image`` builds the image when the engine lacks it and prints its tag.

>>> cfg = ImageConfig.from_env({"INTERP_AGENT_DOCKER_BASE": "local/bookworm", "INTERP_AGENT_DOCKER_TORCH_INDEX": ""})
>>> cfg.base, cfg.torch_index, cfg.build_args()["BASE"]
('local/bookworm', '', 'local/bookworm')
>>> image_tag(cfg).startswith("interp-agent-sandbox:") and image_tag(cfg) != image_tag(ImageConfig())
True
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from sandbox.errors import DockerUnavailable
from sandbox.result import strip_ansi

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = "sandbox/docker/Dockerfile"
IMAGE_REPO = "interp-agent-sandbox"
EXTRA_DIR = "sandbox/docker/extra"
PROJECT_FILES = ("pyproject.toml", "README.md")
PROJECT_DIRS = ("agent", "tools", "sandbox", "evals")
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
ENV_PREFIX = "INTERP_AGENT_DOCKER_"


class ImageConfig(BaseModel):
    """How the sandbox image is built (see the module doc for the matching environment variables)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: str = "python:3.11-slim"
    torch_spec: str = "torch==2.13.0"
    torch_index: str = "https://download.pytorch.org/whl/cpu"
    """Index torch is installed from; ``""`` uses the package index (with ``wheels`` first)."""
    pip_index: str = "https://pypi.org/simple"
    ca_bundle: Path | None = None
    """Extra CA certificates (PEM) trusted by pip during the build, for a proxy that re-signs TLS."""
    wheels: tuple[Path, ...] = Field(default=())
    """Wheel files (or folders of them) pip sees before any index, e.g. a torch wheel on the host's disk."""
    constraints: Path | None = None
    """A pip constraints file for the project's dependencies (pins the image to, e.g., a venv's versions)."""
    network: str | None = None
    """Network mode of the build's RUN steps (``"host"`` when only the host reaches the index)."""
    image: str | None = None
    """A fixed tag to use instead of the content-hash one."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ImageConfig:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            return env.get(ENV_PREFIX + name)

        kw: dict[str, Any] = {}
        for name, field in (("BASE", "base"), ("TORCH_SPEC", "torch_spec"), ("TORCH_INDEX", "torch_index"),
                            ("PIP_INDEX", "pip_index"), ("BUILD_NETWORK", "network"), ("IMAGE", "image")):
            value = get(name)
            if value is not None and (value or name == "TORCH_INDEX"):
                kw[field] = value
        if get("CA_BUNDLE"):
            kw["ca_bundle"] = Path(get("CA_BUNDLE") or "")
        if get("CONSTRAINTS"):
            kw["constraints"] = Path(get("CONSTRAINTS") or "")
        if get("WHEELS"):
            kw["wheels"] = tuple(Path(p) for p in (get("WHEELS") or "").split(os.pathsep) if p)
        return cls(**kw)

    def build_args(self) -> dict[str, str]:
        return {"BASE": self.base, "TORCH_SPEC": self.torch_spec, "TORCH_INDEX": self.torch_index,
                "PIP_INDEX_URL": self.pip_index}


def _project_files(root: Path) -> Iterator[tuple[str, Path]]:
    for name in PROJECT_FILES:
        if (root / name).is_file():
            yield name, root / name
    for top in PROJECT_DIRS:
        for dirpath, dirnames, filenames in os.walk(root / top):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for f in sorted(filenames):
                if not f.endswith((".pyc", ".pyo")):
                    p = Path(dirpath) / f
                    yield p.relative_to(root).as_posix(), p


def _wheel_files(wheels: tuple[Path, ...]) -> list[Path]:
    out: list[Path] = []
    for w in wheels:
        w = w.expanduser()
        if w.is_dir():
            out += sorted(w.glob("*.whl"))
        elif w.is_file() and w.name.endswith(".whl"):
            out.append(w)
        else:
            raise DockerUnavailable(f"no wheel at {str(w)!r} (INTERP_AGENT_DOCKER_WHEELS)",
                                    fix="name .whl files or folders holding them, separated by ':'")
    return out


def context_files(cfg: ImageConfig, root: Path = REPO_ROOT) -> list[tuple[str, Path]]:
    """``(path in the build context, host file)`` for every file the build sees, sorted.

    Raises :class:`DockerUnavailable` when the project's sources are not there (an installed wheel).
    """
    if not (root / DOCKERFILE).is_file() or not (root / "pyproject.toml").is_file():
        raise DockerUnavailable(f"the sandbox image is built from a source checkout; {root} has no {DOCKERFILE} "
                                "and pyproject.toml", fix="build it from a clone: python -m sandbox.docker_image")
    files = dict(_project_files(root))
    if cfg.ca_bundle is not None:
        ca = cfg.ca_bundle.expanduser()
        if not ca.is_file():
            raise DockerUnavailable(f"CA bundle {str(ca)!r} does not exist (INTERP_AGENT_DOCKER_CA_BUNDLE)",
                                    fix="point it at a PEM file of the certificates your proxy uses")
        files[f"{EXTRA_DIR}/build-ca.pem"] = ca
    if cfg.constraints is not None:
        if not cfg.constraints.expanduser().is_file():
            raise DockerUnavailable(f"constraints file {str(cfg.constraints)!r} does not exist "
                                    "(INTERP_AGENT_DOCKER_CONSTRAINTS)", fix="pass a pip constraints file or unset it")
        files[f"{EXTRA_DIR}/constraints.txt"] = cfg.constraints.expanduser()
    for w in _wheel_files(cfg.wheels):
        files[f"{EXTRA_DIR}/wheels/{w.name}"] = w
    return sorted(files.items())


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_hash(cfg: ImageConfig, root: Path = REPO_ROOT) -> str:
    """SHA-256 over the build context (paths, modes, contents) and the build arguments."""
    h = hashlib.sha256()
    for k, v in sorted(cfg.build_args().items()):
        h.update(f"arg {k}={v}\n".encode())
    for arc, path in context_files(cfg, root):
        h.update(f"file {arc} {_mode(path):o} {_file_digest(path)}\n".encode())
    return h.hexdigest()


def image_tag(cfg: ImageConfig, root: Path = REPO_ROOT) -> str:
    """The image's tag: ``cfg.image`` if set, else ``interp-agent-sandbox:<first 16 hex of the content hash>``."""
    return cfg.image or f"{IMAGE_REPO}:{content_hash(cfg, root)[:16]}"


def _mode(path: Path) -> int:
    return 0o755 if os.access(path, os.X_OK) else 0o644


def write_context(fileobj: IO[bytes], cfg: ImageConfig, root: Path = REPO_ROOT) -> int:
    """Write the build context as a tar (fixed owners, modes and times) into ``fileobj``; returns the file count."""
    files = context_files(cfg, root)
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        extra = f"{EXTRA_DIR}/"
        if not any(a.startswith(extra) for a, _ in files):  # COPY sandbox/docker/extra/ needs the folder
            info = tarfile.TarInfo(EXTRA_DIR)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for arc, path in files:
            info = tarfile.TarInfo(arc)
            info.size, info.mode, info.mtime = path.stat().st_size, _mode(path), 0
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return len(files)


def build_image(client: Any, cfg: ImageConfig | None = None, tag: str | None = None,
                on_log: Callable[[str], None] | None = None, root: Path = REPO_ROOT) -> str:
    """Build the image on ``client``'s engine under ``tag`` (default :func:`image_tag`); returns the tag.

    ``on_log`` receives the build's output lines. A failed build raises :class:`DockerUnavailable` with its
    last lines.
    """
    import docker.errors

    cfg = cfg or ImageConfig.from_env()
    tag = tag or image_tag(cfg, root)
    tail: list[str] = []
    with tempfile.TemporaryFile() as ctx:
        write_context(ctx, cfg, root)
        ctx.seek(0)
        try:
            stream = client.api.build(fileobj=ctx, custom_context=True, dockerfile=DOCKERFILE, tag=tag,
                                      buildargs=cfg.build_args(), network_mode=cfg.network, rm=True,
                                      forcerm=True, decode=True)
            for chunk in stream:
                if "error" in chunk:
                    err = strip_ansi(str(chunk["error"])).strip()
                    tail.append(re.sub(r"The command '.*' returned", "a RUN step returned", err, flags=re.S))
                    raise DockerUnavailable(
                        f"building {tag} failed: {' | '.join(t for t in tail[-6:] if t.strip())}",
                        fix="see the build log above; behind a proxy set INTERP_AGENT_DOCKER_CA_BUNDLE and "
                            "INTERP_AGENT_DOCKER_BUILD_NETWORK=host; offline, INTERP_AGENT_DOCKER_WHEELS")
                for line in strip_ansi(str(chunk.get("stream", ""))).splitlines():
                    if line.strip():
                        tail = (tail + [line.rstrip()])[-20:]
                        if on_log:
                            on_log(line.rstrip())
        except docker.errors.DockerException as e:
            raise DockerUnavailable(f"building {tag} failed: {e}",
                                    fix="check the base image (INTERP_AGENT_DOCKER_BASE) is on the engine or "
                                        "pullable, and `docker info`") from e
    return tag


def ensure_image(client: Any, cfg: ImageConfig | None = None, build: bool = True,
                 on_log: Callable[[str], None] | None = None) -> str:
    """The image's tag, built first when the engine lacks it (``build=False``: raise instead)."""
    import docker.errors

    cfg = cfg or ImageConfig.from_env()
    tag = image_tag(cfg)
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        if not build:
            raise DockerUnavailable(f"image {tag!r} is not on the engine",
                                    fix="build it: python -m sandbox.docker_image") from None
    return build_image(client, cfg, tag, on_log=on_log)


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.docker_image [--tag-only]``: build the image if missing; print its tag."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m sandbox.docker_image", description=main.__doc__)
    ap.add_argument("--tag-only", action="store_true", help="print the tag without contacting the engine")
    ap.add_argument("--quiet", action="store_true", help="do not print the build's output")
    args = ap.parse_args(argv)
    try:
        cfg = ImageConfig.from_env()
        if args.tag_only:
            print(image_tag(cfg))
            return 0
        import docker

        try:
            client = docker.from_env()
            client.ping()
        except Exception as e:  # the SDK raises several unrelated types here
            raise DockerUnavailable(f"cannot reach the Docker engine ({type(e).__name__}: {e})",
                                    fix="start dockerd or set DOCKER_HOST") from e
        log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
        print(ensure_image(client, cfg, on_log=log))
        return 0
    except DockerUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["ImageConfig", "build_image", "content_hash", "context_files", "ensure_image", "image_tag",
           "write_context"]
