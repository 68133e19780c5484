"""Packaging: the Dockerfile (no Docker engine in CI, so it is read, and its HEALTHCHECK command
is run against a real server), the version pins, the Makefile's install split, and the wheel
shipping the conformance suite (so `python -m conformance` works after a plain `pip install .`)
and the browser pages' assets."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
from conftest import ROOT


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments dropped."""
    instructions, pending = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not (line.strip() or pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def args_of(keyword: str) -> list[str]:
    return [rest for kw, rest in dockerfile() if kw == keyword]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_dockerfile_user_constraints_and_sources():
    """Non-root numeric uid 10001 owning /data (the README's chown advice depends on it),
    dependencies installed with the pins, and every COPY source present in the build context."""
    assert args_of("USER") == ["10001:10001"]
    [run] = args_of("RUN")
    assert "--uid 10001" in run and "chown 10001:10001 /data" in run
    assert re.search(r"pip install .*-c constraints\.txt \.", run)
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    sources = [src for copy in args_of("COPY") for src in copy.split()[:-1]]
    assert {"constraints.txt", "tusserver", "conformance", "hooks"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source not in ignored, f"{source} is copied but excluded by .dockerignore"
    assert args_of("VOLUME") == ['["/data"]']


def test_dockerfile_healthcheck_runs(shared_server):
    """The HEALTHCHECK is an exec-form stdlib command (slim images have no curl): it succeeds
    against a healthy server and fails when /health is not there; with health off ('') it
    succeeds without asking; it asks TUSSERVER_HOST unless that is a wildcard address."""
    [healthcheck] = args_of("HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"]
    env = {**os.environ, "TUSSERVER_PORT": str(shared_server.port)}
    for name in ("TUSSERVER_HEALTH_PATH", "TUSSERVER_TLS_CERTIFICATE", "TUSSERVER_HOST"):
        env.pop(name, None)

    def probe(**extra: str) -> int:
        argv = [sys.executable, *command[1:]]
        done = subprocess.run(argv, env={**env, **extra}, capture_output=True, timeout=30)
        return done.returncode

    assert probe() == 0
    assert probe(TUSSERVER_HEALTH_PATH="/no-such-path") != 0
    assert probe(TUSSERVER_HEALTH_PATH="") == 0
    assert probe(TUSSERVER_HEALTH_PATH="", TUSSERVER_PORT="1") == 0  # not even a connection
    for wildcard in ("0.0.0.0", "::", ""):
        assert probe(TUSSERVER_HOST=wildcard) == 0, wildcard
    assert probe(TUSSERVER_HOST="127.0.0.1") == 0
    # the server listens on 127.0.0.1 only: another loopback address shows the host is asked
    assert probe(TUSSERVER_HOST="127.0.0.2") != 0


def test_constraints_pin_every_dependency():
    """Each direct dependency (runtime and test) has an exact pin in constraints.txt, which
    `make run`, `make test` and the Dockerfile install with. Adding one? README "Set up"."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            pins[norm(name)] = version
    for requirement in wanted:
        name = norm(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0])
        assert name in pins, f"{name} is not pinned in constraints.txt (run `make constraints`)"


def test_makefile_run_installs_only_the_server(tmp_path):
    """`make run` installs the package alone, `make test` adds '.[test]'; both pin, both make
    the venv themselves, and pytest lists the slowest tests."""
    venv = tmp_path / "venv"

    def plan(target: str) -> str:
        done = subprocess.run(
            ["make", "-n", "-B", f"VENV={venv}", target],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run, test = plan("run"), plan("test")
    assert f"-m venv {venv}" in run and f"-m venv {venv}" in test
    assert "-c constraints.txt -e ." in run and "[test]" not in run
    assert "-c constraints.txt -e '.[test]'" in test
    assert "--durations=15" in test


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from the sources (a copy of the package dirs, no checkout leftovers)."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("tusserver", "conformance"):
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = out.glob("*.whl")
    return built


def test_wheel_ships_conformance(shared_server, wheel, tmp_path):
    """The wheel contains conformance/, and `python -m conformance` imported from that wheel
    (not from the checkout) runs against a server."""
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("__init__", "__main__", "runner", "checks"):
        assert f"conformance/{module}.py" in names
    env = {**os.environ, "PYTHONPATH": str(wheel)}
    where = subprocess.run(
        [sys.executable, "-c", "import conformance.runner as r; print(r.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(wheel)), where.stdout
    done = subprocess.run(
        [sys.executable, "-m", "conformance", shared_server.url, "--only", "termination", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^termination +3 +0 +0$", done.stdout, re.M), done.stdout


def test_wheel_ships_the_web_pages(wheel, tmp_path):
    """The wheel carries the pages' templates, scripts, styles and the vendored Uppy build with
    its licence (no source maps, no refresh script), and the package finds its assets when
    imported from the wheel itself (a zip, as zipimport sees it)."""
    web = "tusserver/web/"
    names = {n.removeprefix(web) for n in zipfile.ZipFile(wheel).namelist() if n.startswith(web)}
    shipped = {"templates/upload.html", "static/upload.js", "static/style.css"}
    vendored = {"vendor/uppy.min.mjs", "vendor/uppy.min.css", "vendor/LICENSE", "vendor/VERSION"}
    assert shipped | vendored <= names
    assert not [n for n in names if n.endswith(".map") or n.endswith(".sh")]
    script = (
        "from tusserver import web; import sys; "
        "print(web.__file__); print(' '.join(sorted(web.asset_table()))); "
        "sys.exit(web.load_asset('vendor/uppy.min.mjs') is None)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(wheel)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    where, assets = done.stdout.splitlines()
    assert where.startswith(str(wheel))
    assert {"upload.js", "style.css", "vendor/uppy.min.mjs", "vendor/uppy.min.css"} <= set(
        assets.split()
    )
