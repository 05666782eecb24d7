"""The images' Dockerfiles (deploy/Dockerfile for CPU, deploy/Dockerfile.cuda for NVIDIA GPUs).

No container engine runs on our machines, so the images are not built here. What CI can check instead:
both lint clean with hadolint; their install steps are Makefile recipes, the same ones `make test` runs,
with only the extras changed; everything they copy exists and gets past their .dockerignore, and nothing
they copy is config or keys (those are mounted); they run as a non-root user, start `turnout serve`, and
their HEALTHCHECK script tells a healthy server from an unhealthy one."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deploy.tools import ROOT, run, tool

DOCKERFILES = ["deploy/Dockerfile", "deploy/Dockerfile.cuda"]
DEV_EXTRAS = "dev,bench,vllm,tools,otel"  # the Makefile's default: what `make test` installs


def instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = (ROOT / path).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(parts[0].upper(), parts[1] if len(parts) > 1 else "")
            for line in joined.splitlines() if (parts := line.strip().split(None, 1))]


def final_stage(path: str) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
    return steps[last_from:]


def arg_default(path: str, name: str) -> str:
    [value] = [args.split("=", 1)[1] for op, args in instructions(path) if op == "ARG" and args.startswith(name + "=")]
    return value


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_finds_nothing(dockerfile):
    done = run(tool("hadolint"), dockerfile, check=False)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_hadolint_really_lints(tmp_path):
    """The check above is live: hadolint fails an unpinned base image and an unpinned apt install."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    done = run(tool("hadolint"), str(bad), check=False)
    assert done.returncode != 0
    assert "DL3007" in done.stdout and "DL3008" in done.stdout, done.stdout


def make_dry_run(*args: str) -> list[str]:
    """The commands `make` would run, without running them (VENV points at a folder that does not exist,
    so every recipe is printed)."""
    return run("make", "--always-make", "--dry-run", "VENV=/nonexistent/venv", *args).stdout.splitlines()


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_install_steps_are_the_makefiles_recipes(dockerfile):
    runs = [args for op, args in instructions(dockerfile) if op == "RUN"]
    assert not [r for r in runs if "pip" in r], "Python packages are installed by `make install`, not by hand"
    [make_line] = [r for r in runs if r.startswith("make ")]
    words = shlex.split(make_line.split("&&")[0])
    assert words[0] == "make"
    targets = [w for w in words[1:] if "=" not in w]
    assert "install" in targets
    extras = arg_default(dockerfile, "EXTRAS")
    image = make_dry_run(*targets, f"EXTRAS={extras}")
    ci = make_dry_run(*targets)  # what `make test` runs on a fresh clone, with every CPU extra
    assert any(f'pip install --quiet -e ".[{extras}]"' in line for line in image), image
    assert [line.replace(f"[{extras}]", "[*]") for line in image] == [line.replace(f"[{DEV_EXTRAS}]", "[*]")
                                                                       for line in ci]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_extras_exist(dockerfile):
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    extras = arg_default(dockerfile, "EXTRAS").split(",")
    assert set(extras) <= set(declared), extras


def test_the_cpu_image_builds_its_kernels_and_the_cuda_image_installs_vllm():
    assert "kernels" in next(a for op, a in instructions("deploy/Dockerfile") if op == "RUN" and a.startswith("make "))
    assert "vllm-cuda" in arg_default("deploy/Dockerfile.cuda", "EXTRAS").split(",")


def dockerignore_allows(dockerfile: str, path: str) -> bool:
    """Whether the Dockerfile's own .dockerignore (everything excluded, then re-included by name) lets
    `path` into the build context. Later patterns win, as in Docker."""
    allowed = True
    for line in (ROOT / f"{dockerfile}.dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        if pattern == "**" or path == pattern or path.startswith(pattern + "/"):
            allowed = negated
    return allowed


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_what_they_copy_exists_and_is_no_config_or_keys(dockerfile):
    copies = [args.split() for op, args in instructions(dockerfile) if op == "COPY" and "--from" not in args]
    sources = [src for words in copies for src in words[:-1] if not src.startswith("--")]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert dockerignore_allows(dockerfile, src), f"{src} is copied but the .dockerignore leaves it out"
        assert not re.search(r"keys|models\.ya?ml|\.env", src), f"{src}: config and keys are mounted, not baked"
    assert not dockerignore_allows(dockerfile, ".venv") and not dockerignore_allows(dockerfile, ".git")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_runs_turnout_serve_as_a_non_root_user_with_a_healthcheck(dockerfile):
    stage = final_stage(dockerfile)
    [user] = [args for op, args in stage if op == "USER"]
    assert user.isdigit() and int(user) != 0
    [entrypoint] = [args for op, args in stage if op == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["turnout", "serve"]
    [cmd] = [args for op, args in stage if op == "CMD"]
    assert json.loads(cmd)[:4] == ["--host", "0.0.0.0", "--port", "8000"]
    [healthcheck] = [args for op, args in stage if op == "HEALTHCHECK"]
    assert healthcheck.split("CMD", 1)[1].strip() == '["python", "/opt/turnout/healthcheck.py"]'
    assert any(op == "COPY" and args.split()[0] == "deploy/healthcheck.py" for op, args in stage)
    exposed = " ".join(args for op, args in stage if op == "EXPOSE").split()
    assert {"8000", "50051"} <= set(exposed)


class _Health(BaseHTTPRequestHandler):
    status = 200

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        authorized = self.headers.get("authorization") == "Bearer k" or not self.server.needs_key
        self.send_response(self.server.status if authorized else 401)
        self.send_header("content-length", "0")
        self.end_headers()


@pytest.fixture
def health_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    server.status, server.needs_key = 200, False
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def healthcheck(url: str, **env) -> int:
    return subprocess.run([sys.executable, str(ROOT / "deploy/healthcheck.py")], timeout=30, capture_output=True,
                          env={"TURNOUT_HEALTHCHECK_URL": url, **env}).returncode


def test_healthcheck_script_exit_codes(health_server):
    url = f"http://127.0.0.1:{health_server.server_address[1]}/health"
    assert healthcheck(url) == 0
    health_server.status = 503  # an engine died: /health says so, and the container is unhealthy
    assert healthcheck(url) == 1
    health_server.status, health_server.needs_key = 200, True  # --api-key-for-ops
    assert healthcheck(url) == 1
    assert healthcheck(url, TURNOUT_API_KEY="k") == 0
    health_server.shutdown()
    health_server.server_close()
    assert healthcheck(url) == 1  # nothing listening
