"""Make a virtual environment that holds only this project's dependencies, linked from the
environments a machine already has: what `uv sync` or `pip install .` would give a user, without
downloading anything.

A shared GPU image often carries many more packages than the project needs, and transformers
imports some of them when they are there (scipy, torchvision, torchaudio, Pillow...), so stages
timed in such an image start slower than on a user's machine. This walks the requirements of
pyproject.toml's `dependencies` through the installed packages' metadata (markers evaluated for
this machine), and links each needed package's files into the new environment's site-packages.
Linux and macOS (symbolic links); the project's own code comes from PYTHONPATH=src.

    python benchmarks/lean_env.py VENV SITE_PACKAGES [SITE_PACKAGES ...]
    VENV/bin/python -c "import torch, transformers"

Where a package is in several SITE_PACKAGES folders, the first one given wins.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.metadata import Distribution, distributions
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def installed(sites: list[Path]) -> dict[str, tuple[Path, Distribution]]:
    """Every distribution in `sites`, by normalized name; the first folder that has it wins."""
    found: dict[str, tuple[Path, Distribution]] = {}
    for site in sites:
        for dist in distributions(path=[str(site)]):
            found.setdefault(canonicalize_name(dist.metadata["Name"]), (site, dist))
    return found


def closure(requirements: list[str], found: dict[str, tuple[Path, Distribution]]) -> tuple[set[str], set[str]]:
    """The distributions `requirements` need, transitively, and those needed but not installed."""
    environment = default_environment()
    todo = [Requirement(text) for text in requirements]
    needed: set[str] = set()
    missing: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in needed or name in missing:
            continue
        if name not in found:
            missing.add(name)
            continue
        needed.add(name)
        extras = set(requirement.extras) | {""}
        for text in found[name][1].requires or []:
            child = Requirement(text)
            if child.marker is None or any(child.marker.evaluate({**environment, "extra": extra}) for extra in extras):
                todo.append(child)
    return needed, missing


def top_level_entries(dist: Distribution) -> set[str]:
    """The files and folders a distribution puts at the top of site-packages, its metadata included."""
    entries = {str(path).replace("\\", "/").split("/")[0] for path in dist.files or []}
    return {entry for entry in entries if entry and entry != ".."}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("venv", type=Path, help="the environment to create (must not exist)")
    parser.add_argument("sites", type=Path, nargs="+", help="site-packages folders to link packages from")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    args = parser.parse_args()
    if args.venv.exists():
        sys.exit(f"{args.venv} exists; give a new folder")

    requirements = tomllib.loads(args.pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    found = installed(args.sites)
    needed, missing = closure(requirements, found)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(args.venv)], check=True)
    target = Path(subprocess.run([str(args.venv / "bin" / "python"), "-c",
                                  "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip())
    for name in sorted(needed):
        site, dist = found[name]
        for entry in top_level_entries(dist):
            source, link = site / entry, target / entry
            if source.exists() and not os.path.lexists(link):
                link.symlink_to(source)
    print(f"{args.venv}: {len(needed)} packages linked; left out {len(set(found) - needed)} others"
          + (f"; needed but not installed: {' '.join(sorted(missing))}" if missing else ""))
    if set(found) - needed:
        print("left out: " + " ".join(sorted(set(found) - needed)))


if __name__ == "__main__":
    main()
