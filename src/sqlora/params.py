"""Read one section of params.yaml and check its values before any heavy work."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import ParamError


def load_section(section: str, path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path} not found (run from the project root)")
    with path.open(encoding="utf-8") as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params.get(section), dict):
        raise ParamError(f"{path}: section '{section}' is missing")
    return params[section]


def choice(section: dict, key: str, allowed: Iterable, name: str) -> Any:
    allowed = list(allowed)
    value = require(section, key, name)
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ParamError(f"{name}.{key} = {value!r}: allowed values are {shown}")
    return value


def number(section: dict, key: str, name: str, *, minimum=None, maximum=None,
           exclusive_minimum=False, integer=False) -> Any:
    value = require(section, key, name)
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ParamError(f"{name}.{key} = {value!r}: must be {kind}")
    low_fails = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    high_fails = maximum is not None and value > maximum
    if low_fails or high_fails:
        low = "" if minimum is None else f"{'>' if exclusive_minimum else '>='} {minimum}"
        high = "" if maximum is None else f"<= {maximum}"
        bounds = " and ".join(b for b in (low, high) if b)
        raise ParamError(f"{name}.{key} = {value!r}: must be {kind} {bounds}")
    return value


def boolean(section: dict, key: str, name: str) -> bool:
    value = require(section, key, name)
    if not isinstance(value, bool):
        raise ParamError(f"{name}.{key} = {value!r}: allowed values are true, false")
    return value


def require(section: dict, key: str, name: str) -> Any:
    if key not in section:
        raise ParamError(f"{name}.{key} is missing from params.yaml")
    return section[key]
