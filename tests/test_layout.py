"""The package's rooms import one way: core, then sql, data and model, then train, predict and
eval, then the commands that use them; no module imports a room above its own, function-level
imports included, and no two modules import each other, directly or round a circle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sqlora"
# a room may import rooms of a lower rank, and its own
RANKS = {"core": 0, "sql": 1, "data": 2, "model": 3, "train": 4, "predict": 4, "eval": 4}
COMMANDS = 5  # modules directly in sqlora/ (sqlora ask, compare, ...)


def module_name(path: Path) -> str:
    if PACKAGE not in path.parents:
        return path.stem  # a stage script
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The sqlora modules a file imports, anywhere in it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("sqlora"):
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)  # from .x import module
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("sqlora"))
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


def rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 2 and parts[1] not in RANKS:
        return COMMANDS
    return RANKS.get(parts[1], -1) if len(parts) > 1 else -1


def graph() -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path) for path in PACKAGE.rglob("*.py")}


def test_every_module_lives_in_a_room():
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert rooms == set(RANKS), rooms


def test_imports_go_down_the_rooms():
    wrong = [(module, target) for module, targets in graph().items() for target in targets
             if rank(target) > rank(module) or (rank(target) == rank(module) and target.split(".")[1]
                                                != module.split(".")[1] and rank(module) != COMMANDS)]
    assert not wrong, wrong


def test_no_import_circle():
    edges = graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                raise AssertionError(" -> ".join(path[path.index(target):] + [target]) if target in path
                                     else f"{module} -> {target}")
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def stage_scripts() -> dict[str, Path]:
    """dvc.yaml's stages and the script each one runs."""
    import yaml

    stages = yaml.safe_load((PACKAGE.parents[1] / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    scripts = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        script = next(word for word in body["cmd"].split() if word.startswith("stages/"))
        scripts[name] = (PACKAGE.parents[1] / script, body["deps"])
    return scripts


def test_each_stage_lists_the_code_it_runs_among_its_deps():
    """Editing a module reruns every stage that imports it (directly or not): the modules a stage's
    script reaches lie in the folders its deps name. The training stage's resume fingerprint reads
    the same deps (train.resume.stage_code)."""
    from sqlora.train.resume import stage_code

    edges = graph()
    root = PACKAGE.parents[1]
    for name, (script, deps) in stage_scripts().items():
        reached, todo = set(), [m for m in imported_modules(script) if m in edges]
        while todo:
            module = todo.pop()
            if module not in reached:
                reached.add(module)
                todo.extend(edges.get(module, ()))
        files = {PACKAGE.parent.joinpath(*m.split(".")) for m in reached}
        files = {f / "__init__.py" if f.is_dir() else f.with_suffix(".py") for f in files}
        covered = [root / dep for dep in deps if str(dep).startswith(("src/", "stages/"))]
        missing = [f.relative_to(root).as_posix() for f in files
                   if not any(f == c or c in f.parents for c in covered)]
        assert not missing, (name, missing)
        assert script in covered, name
    train_code = stage_code("quantize-and-train", Path("stages/train.py"), root / "dvc.yaml")
    assert train_code and all(str(path).startswith(("src/", "stages/")) for path in train_code)


def test_no_stage_lists_a_path_twice():
    """A repeated dep, param or output is a copy-paste slip that DVC accepts without a word."""
    import yaml

    stages = yaml.safe_load((PACKAGE.parents[1] / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        for section in ("deps", "params", "outs", "metrics"):
            entries = [next(iter(e)) if isinstance(e, dict) else e for e in body.get(section, [])]
            assert len(entries) == len(set(entries)), (name, section, entries)
