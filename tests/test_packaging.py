"""Fast checks of the offline bundle (docs/packaging.md); `make bundle-check` builds and installs the real one.

install.sh runs for real here against a tiny wheelhouse of hand-made wheels, with pip pointed at an unreachable
index, so its offline logic (checksums, --no-index, the no-deps model package, launchers, desktop entry) is
exercised without building KAT's 400 MB bundle. KAT_INSTALL_SKIP_CHECKS=1 skips the model/smoke checks, which
need the real `kat`.
"""

from __future__ import annotations

import ast
import base64
import configparser
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "packaging"
SCRIPTS = [PKG / "install.sh", PKG / "build_bundle.sh", PKG / "check_bundle.sh"]


# ------------------------------------------------------------------------------------------- static checks


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_syntax(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.access(script, os.X_OK), f"{script.name} is not executable"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck():
    r = subprocess.run(["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_spec_is_python_and_names_the_entry_points():
    spec = (PKG / "kat.spec").read_text(encoding="utf-8")
    tree = ast.parse(spec, filename="kat.spec")
    names = {
        kw.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "EXE"
        for kw in node.keywords
        if kw.arg == "name"
    }
    assert names == {"kat", "kat-gui"}
    assert "kat_entry.py" in spec
    # The entry script dispatches to the same functions as the wheel's console scripts.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert scripts["scripts"]["kat"] == "kat_gui.cli:main"
    assert scripts["gui-scripts"]["kat-gui"] == "kat_gui.cli:gui_main"
    entry = ast.parse((PKG / "kat_entry.py").read_text(encoding="utf-8"))
    imported = {(n.module, a.name) for n in ast.walk(entry) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {("kat_gui.cli", "main"), ("kat_gui.cli", "gui_main")} <= imported


def test_desktop_entry():
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read(PKG / "kat-gui.desktop", encoding="utf-8")
    e = cp["Desktop Entry"]
    assert e["Type"] == "Application"
    assert e["Exec"].split()[0] == "kat-gui"
    assert e["Icon"] == "kat"
    assert (ROOT / "resources" / "icons" / "kat.svg").is_file()


# ------------------------------------------------------------------------------- data files in the wheel


def _load_hook():
    spec = importlib.util.spec_from_file_location("kat_build_hook", PKG / "build_hook.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_build_hook_copies_resources_and_manifest(tmp_path, monkeypatch):
    from setuptools import Distribution

    hook = _load_hook()
    dist = Distribution({"name": "kat-gui", "packages": []})
    cmd = hook.BuildPy(dist)
    cmd.initialize_options()
    cmd.build_lib = str(tmp_path)
    cmd.finalize_options()
    stale = tmp_path / "kat_gui" / "_resources" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    cmd.run()
    dest = tmp_path / "kat_gui" / "_resources"
    assert not stale.exists()
    for rel in ("icons/kat.svg", "kernel_classes.toml", "knowledge/gpu_throttling.md"):
        assert (dest / rel).read_bytes() == (ROOT / "resources" / rel).read_bytes(), rel
    assert (dest / "models" / "manifest.json").read_bytes() == (
        ROOT / "models" / "manifest.json"
    ).read_bytes()
    # KAT's explainer adapter and its card travel beside the manifest (the explainer finds them there).
    for name in ("kat-explainer-lora.gguf", "kat-explainer-lora.md"):
        assert (dest / "models" / name).read_bytes() == (ROOT / "models" / name).read_bytes(), name

    # The run-time lookup prefers such a packaged copy and falls back to the source tree.
    from kat_gui import resource_files

    assert resource_files.resource_path("icons", "kat.svg").is_file()
    assert resource_files.manifest_path().is_file()
    monkeypatch.setattr(resource_files, "PACKAGED_DIR", dest)
    assert resource_files.resources_dir() == dest
    assert resource_files.manifest_path() == dest / "models" / "manifest.json"
    monkeypatch.setattr(resource_files, "PACKAGED_DIR", tmp_path / "absent")
    assert resource_files.resources_dir() == ROOT / "resources"


def test_runtime_pins_reach_the_bundle():
    """Every dependency pyproject declares is pinned in requirements/runtime.txt, the list build_bundle.sh
    downloads wheels for (so the offline bundle carries isal, the fast .json.gz inflate, and the rest)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in deps}
    pinned = {
        line.split("==")[0].strip().lower()
        for line in (ROOT / "requirements" / "runtime.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    }
    assert "isal" in names and "isal" in pinned
    assert names <= pinned, sorted(names - pinned)
    assert "requirements/runtime.txt" in (PKG / "build_bundle.sh").read_text()


def test_pyproject_names_the_hook():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert cfg["tool"]["setuptools"]["cmdclass"]["build_py"] == "packaging.build_hook.BuildPy"
    assert hasattr(_load_hook(), "BuildPy")


# ------------------------------------------------------------------------- install.sh on a tiny wheelhouse


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal valid pure-Python wheel with one module ``<name>`` holding ``VERSION``."""
    dist = name.replace("-", "_")
    files = {
        f"{dist}.py": f"VERSION = {version!r}\n",
        f"{dist}-{version}.dist-info/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}-{version}.dist-info/RECORD,,")
    files[f"{dist}-{version}.dist-info/RECORD"] = "\n".join(record) + "\n"
    out = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return out


def _sums(bundle: Path) -> None:
    lines = []
    for p in sorted(bundle.rglob("*")):
        if p.is_file() and p.name != "SHA256SUMS":
            lines.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./{p.relative_to(bundle)}")
    (bundle / "SHA256SUMS").write_text("\n".join(lines) + "\n")


@pytest.fixture
def tiny_bundle(tmp_path) -> Path:
    b = tmp_path / "bundle"
    wh = b / "wheelhouse"
    wh.mkdir(parents=True)
    _wheel(wh, "katprobe", "0.1", requires=("katdep==0.2",))
    _wheel(wh, "katdep", "0.2")
    # Like the model package: declares a dependency the bundle does not carry, so it must go in with --no-deps.
    _wheel(wh, "katmodel", "0.3", requires=("not-in-the-bundle>=1",))
    shutil.copy2(PKG / "install.sh", b / "install.sh")
    (b / "requirements.txt").write_text("katprobe==0.1\n")
    py = "{}.{}".format(*sys.version_info[:2])
    (b / "bundle.env").write_text(f'KAT_VERSION=0.0.test\nKAT_PYTHON={py}\nKAT_NODEPS="katmodel==0.3"\n')
    (b / "share").mkdir()
    shutil.copy2(PKG / "kat-gui.desktop", b / "share" / "kat-gui.desktop")
    shutil.copy2(ROOT / "resources" / "icons" / "kat.svg", b / "share" / "kat.svg")
    _sums(b)
    return b


def _install(bundle: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_DATA_HOME=str(tmp_path / "home" / "share"),
        KAT_INSTALL_SKIP_CHECKS="1",
        # Any attempt to reach an index or proxy would hit a closed port and fail.
        PIP_INDEX_URL="http://127.0.0.1:9/simple",
        PIP_EXTRA_INDEX_URL="http://127.0.0.1:9/simple",
        PIP_FIND_LINKS="",
        http_proxy="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
    )
    cmd = ["bash", str(bundle / "install.sh"), "--prefix", str(tmp_path / "opt"), "--python", sys.executable]
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=180)


def test_install_from_tiny_wheelhouse(tiny_bundle, tmp_path):
    r = _install(tiny_bundle, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    vpy = tmp_path / "opt" / "venv" / "bin" / "python"
    probe = subprocess.run(
        [
            str(vpy),
            "-c",
            "import katprobe, katdep, katmodel; print(katprobe.VERSION, katdep.VERSION, katmodel.VERSION)",
        ],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.split() == ["0.1", "0.2", "0.3"], probe.stderr
    desktop = tmp_path / "home" / "share" / "applications" / "kat-gui.desktop"
    assert f"Exec={tmp_path / 'opt' / 'venv' / 'bin' / 'kat-gui'} %F" in desktop.read_text()
    assert (tmp_path / "home" / "share" / "icons" / "hicolor" / "scalable" / "apps" / "kat.svg").is_file()


def test_install_never_falls_back_to_an_index(tiny_bundle, tmp_path):
    (tiny_bundle / "wheelhouse" / "katdep-0.2-py3-none-any.whl").unlink()
    _sums(tiny_bundle)
    r = _install(tiny_bundle, tmp_path, "--no-desktop")
    assert r.returncode != 0
    assert "katdep" in r.stderr
    assert "127.0.0.1" not in r.stderr  # pip never tried the (unreachable) index


def test_damaged_bundle_is_refused(tiny_bundle, tmp_path):
    whl = tiny_bundle / "wheelhouse" / "katdep-0.2-py3-none-any.whl"
    whl.write_bytes(whl.read_bytes()[:-10])
    r = _install(tiny_bundle, tmp_path)
    assert r.returncode != 0
    assert "damaged" in r.stderr
    assert not (tmp_path / "opt" / "venv").exists()


def test_wrong_python_is_refused(tiny_bundle, tmp_path):
    env = (tiny_bundle / "bundle.env").read_text().replace("KAT_PYTHON=", "KAT_PYTHON=2.")
    (tiny_bundle / "bundle.env").write_text(env)
    _sums(tiny_bundle)
    r = _install(tiny_bundle, tmp_path)
    assert r.returncode != 0
    assert "--frozen" in r.stderr
