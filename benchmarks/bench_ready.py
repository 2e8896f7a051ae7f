"""Seconds from a predict stage's start to its first generated batch (`ready_s`), for one or
more versions of the code.

Each run is the real stage (`stages/predict.py` of a project folder, with that folder's `src`
first on PYTHONPATH) in a fresh process, on the first few dev questions; the versions take
turns round after round. With --cold (Linux), before every run the OS file cache drops the files
of every folder on Python's path and the model's, as on a machine that has just started: the
stage then reads its libraries from disk. Run in a project after `dvc repro prepare-model
preprocess` (and training, for --model outputs/adapter):

    python benchmarks/bench_ready.py --cold
    python benchmarks/bench_ready.py --code before=../old-checkout after=. --rounds 5
    python benchmarks/bench_ready.py --importtime

With --importtime the stage runs under `python -X importtime` (which slows it a little), and a
second table splits the seconds spent importing by package, each module's own time counted once,
and says which packages a `uv sync` of this project installs (uv.lock): the others are imported
only because this environment has them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def drop_from_file_cache(folders: list[Path]) -> int:
    """Ask the OS to drop its cached pages of every file under `folders`; returns the files seen."""
    seen = 0
    for folder in folders:
        for dirpath, _, names in os.walk(folder):
            for name in names:
                try:
                    fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    seen += 1
                except OSError:
                    pass
                finally:
                    os.close(fd)
    return seen


IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)")
TORCH_PARTS = ("torch._dynamo", "torch.distributed")  # shown apart from the rest of torch


def import_seconds_by_package(importtime_log: str) -> dict[str, float]:
    """Seconds of `python -X importtime` output per package: each module's own (self) time, summed
    under its top-level package, with torch's compiler and distributed packages apart."""
    seconds: dict[str, float] = {}
    for self_us, module in IMPORT_LINE.findall(importtime_log):
        package = next((part for part in TORCH_PARTS if module == part or module.startswith(part + ".")),
                       module.split(".")[0])
        seconds[package] = seconds.get(package, 0.0) + int(self_us) / 1e6
    return seconds


def locked_packages(lock: Path) -> set[str]:
    """Normalized names of the distributions in uv.lock."""
    if not lock.is_file():
        return set()
    names = re.findall(r'^name = "([^"]+)"', lock.read_text(encoding="utf-8"), flags=re.M)
    return {canonicalize_name(name) for name in names}


def in_lock(package: str, locked: set[str], distributions: dict[str, list[str]]) -> str:
    top = package.split(".")[0]
    if top not in distributions:
        return "standard library" if top in sys.stdlib_module_names else "?"
    return "yes" if {canonicalize_name(name) for name in distributions[top]} & locked else "no"


def print_import_table(runs: list[dict]) -> None:
    from importlib.metadata import packages_distributions

    total = median(sum(run["imports"].values()) for run in runs)
    packages = sorted({p for run in runs for p in run["imports"]},
                      key=lambda p: -median(run["imports"].get(p, 0.0) for run in runs))
    locked, distributions = locked_packages(ROOT / "uv.lock"), packages_distributions()
    print(f"\nimporting, median of {len(runs)} runs: {total:.2f} s in all")
    print(f"| package | seconds | share | {'in uv.lock' if locked else '(no uv.lock here)'} |")
    print("| --- | --- | --- | --- |")
    shown = 0.0
    for package in packages:
        seconds = median(run["imports"].get(package, 0.0) for run in runs)
        if seconds < 0.02:
            break
        shown += seconds
        print(f"| {package} | {seconds:.2f} | {seconds / total:.0%} | "
              f"{in_lock(package, locked, distributions) if locked else ''} |")
    print(f"| everything else | {max(0.0, total - shown):.2f} | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("outputs/base_model"))
    parser.add_argument("--base", type=Path, default=Path("outputs/base_model"))
    parser.add_argument("--dev", type=Path, default=Path("data/prepared/dev.jsonl"))
    parser.add_argument("--db", type=Path, default=Path("data/spider/database"))
    parser.add_argument("--questions", type=int, default=16, help="dev questions each run answers")
    parser.add_argument("--code", nargs="+", default=[f"this={ROOT}"], metavar="LABEL=FOLDER",
                        help="project folders whose stages/predict.py and src/ to time (default: this one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="empty the file cache before each run (Linux)")
    parser.add_argument("--importtime", action="store_true",
                        help="run under python -X importtime and split the import seconds by package")
    parser.add_argument("--json", type=Path, help="also write the runs here")
    args = parser.parse_args()
    if args.cold and not hasattr(os, "posix_fadvise"):
        sys.exit("--cold needs posix_fadvise (Linux)")

    versions = dict(code.split("=", 1) if "=" in code else (code, code) for code in args.code)
    folders = sorted({Path(p).resolve() for p in sys.path if p and Path(p).is_dir() and Path(p) != ROOT}
                     | {Path(folder, "src").resolve() for folder in versions.values()}
                     | {args.model.resolve(), args.base.resolve()})
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        dev = Path(tmp) / "dev.jsonl"
        with args.dev.open(encoding="utf-8") as f:
            dev.write_text("".join(line for _, line in zip(range(args.questions), f)), encoding="utf-8")
        for round_ in range(1, args.rounds + 1):
            for label, folder in versions.items():
                if args.cold:
                    drop_from_file_cache(folders)
                metrics, details = Path(tmp) / "metrics.json", Path(tmp) / "details.json"
                started = time.perf_counter()
                src = str(Path(folder, "src").resolve())
                pythonpath = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
                python = [sys.executable, "-X", "importtime"] if args.importtime else [sys.executable]
                done = subprocess.run(
                    python + [str(Path(folder, "stages", "predict.py")), "--model", str(args.model),
                              "--base", str(args.base), "--dev", str(dev), "--db", str(args.db),
                              "--out", str(Path(tmp) / "pred"), "--metrics", str(metrics),
                              "--details", str(details)],
                    capture_output=True, text=True, env={**os.environ, "PYTHONPATH": pythonpath})
                if done.returncode:
                    sys.exit(f"the stage of {label} failed:\n{done.stderr[-3000:]}")
                stats = {**json.loads(metrics.read_text(encoding="utf-8")),
                         **json.loads(details.read_text(encoding="utf-8"))}
                runs.append({"code": label, "round": round_, "cold": args.cold,
                             "ready_s": stats["ready_s"], "load_s": stats["load_s"],
                             "process_s": round(time.perf_counter() - started, 2)})
                print(json.dumps(runs[-1]), flush=True)
                if args.importtime:
                    runs[-1]["imports"] = import_seconds_by_package(done.stderr)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1) + "\n", encoding="utf-8")
    print(f"\n{'cold file cache' if args.cold else 'warm file cache'}, {args.rounds} rounds, "
          f"{args.questions} questions, model {args.model}")
    print("| code | ready_s, each round | median ready_s | median load_s | median process s |")
    print("| --- | --- | --- | --- | --- |")
    for label in versions:
        mine = [r for r in runs if r["code"] == label]
        print(f"| {label} | {', '.join(str(r['ready_s']) for r in mine)} | {median(r['ready_s'] for r in mine):.2f} "
              f"| {median(r['load_s'] for r in mine):.2f} | {median(r['process_s'] for r in mine):.2f} |")
    if args.importtime:
        for label in versions:
            if len(versions) > 1:
                print(f"\n{label}:", end="")
            print_import_table([r for r in runs if r["code"] == label])


if __name__ == "__main__":
    main()
