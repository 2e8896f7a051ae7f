"""benchmarks/lean_env.py: an environment with the project's dependencies only, linked."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(sys.platform == "win32", reason="links packages with symbolic links")
def test_the_environment_holds_the_dependencies_and_nothing_else(tmp_path):
    venv = tmp_path / "venv"
    site = sysconfig.get_paths()["purelib"]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lean_env.py"), str(venv), site],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "packages linked" in done.stdout and "pytest" in done.stdout.split("left out:")[-1]
    check = ("import importlib.util, yaml, tqdm; from importlib.metadata import version; "
             "assert importlib.util.find_spec('pytest') is None, 'pytest is no dependency'; print(version('pyyaml'))")
    run = subprocess.run([str(venv / "bin" / "python"), "-c", check], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip()

    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lean_env.py"), str(venv), site],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "exists" in again.stderr


def test_the_closure_follows_markers_and_extras(tmp_path):
    from script_modules import load_script

    lean_env = load_script("benchmarks/lean_env.py")

    class Dist:
        def __init__(self, requires):
            self.requires = requires

    found = {"a": (tmp_path, Dist(["b>=1", "c; sys_platform == 'never'", "d; extra == 'x'"])),
             "b": (tmp_path, Dist(None)), "c": (tmp_path, Dist(None)), "d": (tmp_path, Dist(["e"]))}
    assert lean_env.closure(["A"], found) == ({"a", "b"}, set())
    assert lean_env.closure(["a[x]"], found) == ({"a", "b", "d"}, {"e"})
