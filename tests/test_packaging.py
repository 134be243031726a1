"""What `pip install .` gives: a wheel, built from the sdist, that serves the frontend installed.

The build is what `python -m build` does (an sdist, then the wheel from the unpacked sdist), so a
file the sdist forgets is missing from the wheel too. It runs offline, with the project venv's
setuptools (`--no-build-isolation`), on a copy of the source tree, so that nothing is written
into the checkout.

The wheel goes into a fresh virtualenv in a temporary directory, with `--no-deps`. Its runtime
dependencies come from the project's venv through a `.pth` line that names that venv's
site-packages: a directory named in a `.pth` file is put on sys.path but its own `.pth` files
are not run, so the editable install of the checkout (a finder started from a `.pth` file) stays
out. Installing the dependencies from PyPI instead would make the test slow and need the network.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import requests

from harness.processes import ServiceProcess

REPO = Path(__file__).resolve().parent.parent
STATIC = REPO / "static"
# What a clone does not have, or what a build would trip over.
NOT_IN_A_CLONE = (".git", ".venv", "node_modules", "var", "build", "dist", "*.egg-info",
                  "__pycache__", ".pytest_cache", "test-artifacts", "results")
BUILD_TIMEOUT = 300.0
SDIST_HOOK = ("import sys; from setuptools import build_meta; "
              "print(build_meta.build_sdist(sys.argv[1]))")


def run(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True,
                            text=True, timeout=BUILD_TIMEOUT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def build_wheel(work: Path) -> Path:
    source, dist = work / "source", work / "dist"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_IN_A_CLONE))
    sdist_name = run(sys.executable, "-c", SDIST_HOOK, dist, cwd=source).splitlines()[-1]
    with tarfile.open(dist / sdist_name) as sdist:
        sdist.extractall(work / "unpacked", filter="data")
    [unpacked] = (work / "unpacked").iterdir()
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "--quiet", "-w", dist, unpacked)
    [wheel] = dist.glob("tempalias-*.whl")
    return wheel


def fresh_venv_with(wheel: Path, venv: Path) -> Path:
    """The wheel installed in a new virtualenv; returns its ``tempalias`` console script."""
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site_packages = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
                         .strip())
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site_packages / "project_venv_dependencies.pth").write_text("\n".join(ours) + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "--disable-pip-version-check", "--quiet", wheel)
    # From outside the checkout: `-c` puts the working directory first on sys.path.
    imported = run(python, "-c", "import tempalias; print(tempalias.__file__)", cwd=venv).strip()
    assert Path(imported).is_relative_to(venv), f"tempalias came from {imported}"
    return venv / "bin" / "tempalias"


def test_an_installed_wheel_serves_the_page_the_bookmarklet_the_assets_and_the_extension(
        tmp_path, redis_server):
    wheel = build_wheel(tmp_path / "build")
    tempalias = fresh_venv_with(wheel, tmp_path / "venv")
    service = ServiceProcess(tmp_path / "run", {"TEMPALIAS_REDIS_URL": redis_server.url,
                                                "PYTHONPATH": ""},
                             command=(str(tempalias),)).start()
    try:
        for path, name in [("/", "index.html"), ("/static/app.js", "app.js"),
                           ("/bookmarklet.js", "bookmarklet.js")]:
            answer = requests.get(service.http_url + path, timeout=10)
            assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text[:200]}"
            assert answer.content == (STATIC / name).read_bytes(), path
        page = requests.get(service.http_url + "/", timeout=10).text
        assert "<title>tempalias" in page
        # The browser extension travels too: the page's download is built from the installed copy.
        answer = requests.get(service.http_url + "/extension/tempalias-firefox.zip", timeout=10)
        assert answer.status_code == 200, answer.text[:200]
        with zipfile.ZipFile(io.BytesIO(answer.content)) as packed:
            assert packed.read("content.js") == (REPO / "extension" / "content.js").read_bytes()
    finally:
        assert service.stop() == 0
