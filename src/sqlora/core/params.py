"""Every section of params.yaml, its keys and their limits, in one place.

A stage reads the file once (`Params.read`) and takes the sections it uses as attributes; each
section is checked the first time it is taken, so a wrong value ends the stage with one line
naming the key and what it allows, before any heavy work:

    params = Params.read("params.yaml")
    quant, train = params.quant, params.train     # QuantParams, TrainParams

The limits of the keys (numbers, choices, true/false, "auto") are in one table, `LIMITS`, which
the sections read their keys through; tests/test_params.py tries a bad value of every key there.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import ParamError

SCHEMA_FORMATS = ("compact", "ddl", "names")  # data/schema.py writes each
QUANT_BITS = (4, 8, 16)
QUANT_TYPES = ("nf4", "fp4")
COMPUTE_DTYPES = ("auto", "bfloat16", "float16", "float32")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
EVAL_METRICS = ("auto", "spider", "bird")  # auto: bird for BIRD's layout, else spider (sqlora.eval.accuracy)
AUTO = "auto"  # chosen by the stage from what it measures (see train/schedule.py, data/schema.py)
# `auto` settings differ below and above this many parameters (docs/TRAINING.md)
SMALL_MODEL_PARAMETERS = 300e6
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Limit:
    """What one key allows: a number (in a range), one of some values, or true/false; with auto,
    "auto" too. `read` checks the key's value in a section and returns it."""

    kind: str                            # "number", "choice" or "boolean"
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    integer: bool = False
    allowed: tuple = ()                  # for "choice"
    auto: bool = False

    def read(self, section: dict, key: str, name: str) -> Any:
        return auto_or(self._read, section, key, name) if self.auto else self._read(section, key, name)

    def _read(self, section: dict, key: str, name: str) -> Any:
        if self.kind == "number":
            return number(section, key, name, minimum=self.minimum, maximum=self.maximum,
                          exclusive_minimum=self.exclusive_minimum, integer=self.integer)
        if self.kind == "choice":
            return choice(section, key, self.allowed, name)
        return boolean(section, key, name)


def a_number(*, minimum=None, above=None, maximum=None, auto=False) -> Limit:
    """A number >= minimum (or > above) and <= maximum."""
    return Limit("number", minimum=above if above is not None else minimum, maximum=maximum,
                 exclusive_minimum=above is not None, auto=auto)


def an_integer(*, minimum=None, above=None, auto=False) -> Limit:
    return dataclasses.replace(a_number(minimum=minimum, above=above, auto=auto), integer=True)


def one_of(*allowed) -> Limit:
    return Limit("choice", allowed=allowed)


def true_or_false(*, auto=False) -> Limit:
    return Limit("boolean", auto=auto)


# section -> key -> what the key allows; the other keys (paths, hashes, module lists, strings)
# are checked by their section's `read`
LIMITS: dict[str, dict[str, Limit]] = {
    "data": {
        "schema_format": one_of(AUTO, *SCHEMA_FORMATS),
        "value_hints": true_or_false(),
        "evidence": true_or_false(),
        "train_limit": an_integer(minimum=0),
        "dev_limit": an_integer(minimum=0),
        "dev_fraction": a_number(above=0, maximum=1),
        "split_seed": an_integer(),
    },
    "model": {
        "trust_remote_code": true_or_false(),
    },
    "quant": {
        "bits": one_of(*QUANT_BITS),
        "bnb_4bit_quant_type": one_of(*QUANT_TYPES),
        "bnb_4bit_use_double_quant": true_or_false(),
        "bnb_4bit_compute_dtype": one_of(*COMPUTE_DTYPES),
    },
    "lora": {
        "r": an_integer(above=0),
        "alpha": a_number(above=0),
        "dropout": a_number(minimum=0, maximum=1),
    },
    "train": {
        "epochs": a_number(above=0, auto=True),
        "max_steps": an_integer(minimum=-1),
        "batch_size": an_integer(minimum=1),
        "gradient_accumulation_steps": an_integer(minimum=1),
        "learning_rate": a_number(above=0, auto=True),
        "lr_scheduler": one_of(*SCHEDULERS),
        "warmup_steps": an_integer(minimum=0),
        "max_length": an_integer(minimum=16),
        "gradient_checkpointing": true_or_false(auto=True),
        "dequantize": true_or_false(auto=True),
        "float32_norms": true_or_false(auto=True),
        "group_by_length": true_or_false(),
        "check_generations": true_or_false(),
        "seed": an_integer(),
        "logging_steps": an_integer(minimum=1),
        "save_steps": an_integer(minimum=1),
    },
    "predict": {
        "batch_size": an_integer(minimum=1),
        "max_new_tokens": an_integer(minimum=1),
        "dequantize": true_or_false(),
        "num_candidates": an_integer(minimum=1),
        "num_gpus": an_integer(minimum=0),
        "repair_columns": true_or_false(),
    },
    "eval": {
        "timeout": a_number(above=0),
        "keep_distinct": true_or_false(),
        "workers": an_integer(minimum=0),
        "metric": one_of(*EVAL_METRICS),
    },
}


def checked(section: dict, name: str) -> dict[str, Any]:
    """Every key of LIMITS[name], read from section and checked."""
    return {key: limit.read(section, key, name) for key, limit in LIMITS[name].items()}


@dataclass(frozen=True)
class DataParams:
    source: str                  # an http(s) URL of a Spider zip, a local zip or a local folder (sqlora.data.layouts)
    sha256: str                  # of the zip; "" skips the check
    schema_format: str           # auto, or one of SCHEMA_FORMATS
    value_hints: bool
    evidence: bool               # a question's evidence (BIRD's hint) in its prompt
    train_limit: int             # 0 = all
    dev_limit: int
    dev_fraction: float          # of the questions, split off by database where the data has no dev file
    split_seed: int

    @classmethod
    def read(cls, s: dict) -> DataParams:
        source = require(s, "source", "data")
        if not isinstance(source, str) or not source.strip():
            raise ParamError(f"data.source = {source!r}: must be a URL, a zip file or a folder")
        return cls(source=source.strip(), sha256=sha256(s, "data"), **checked(s, "data"))


@dataclass(frozen=True)
class ModelParams:
    name_or_path: str            # a hub id, a model folder, a .gguf file or pkg:<package>/<file>.gguf
    sha256: str                  # of a .gguf; "" skips the check
    trust_remote_code: bool

    @classmethod
    def read(cls, s: dict) -> ModelParams:
        name = s.get("name_or_path")
        if not isinstance(name, str) or not name.strip():
            raise ParamError("model.name_or_path is empty: give a hub id, a model folder or a .gguf file")
        return cls(name_or_path=name.strip(), sha256=sha256(s, "model"), **checked(s, "model"))


@dataclass(frozen=True)
class QuantParams:
    bits: int = 4                                # 4 (QLoRA), 8, or 16 (plain LoRA)
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: str = "auto"

    @classmethod
    def read(cls, s: dict) -> QuantParams:
        return cls(**checked(s, "quant"))


@dataclass(frozen=True)
class LoraParams:
    r: int
    alpha: float
    dropout: float
    target_modules: str | tuple[str, ...]       # "all-linear" or module names

    @classmethod
    def read(cls, s: dict) -> LoraParams:
        numbers = checked(s, "lora")
        targets = require(s, "target_modules", "lora")
        if not (targets == "all-linear" or (isinstance(targets, list) and targets
                                            and all(isinstance(t, str) for t in targets))):
            raise ParamError(f"lora.target_modules = {targets!r}: allowed values are 'all-linear' "
                             "or a list of module names such as [q_proj, v_proj]")
        return cls(**numbers, target_modules=targets if isinstance(targets, str) else tuple(targets))


@dataclass(frozen=True)
class TrainParams:
    epochs: float | str          # "auto": from the model's parameter count (train.schedule.SIZE_SCHEDULES)
    max_steps: int               # > 0 stops after this many optimizer steps
    batch_size: int              # examples per optimizer step (per process), whatever the card
    gradient_accumulation_steps: int
    learning_rate: float | str   # "auto": as epochs
    lr_scheduler: str
    warmup_steps: int
    max_length: int
    gradient_checkpointing: bool | str  # "auto": on where the card measures it faster
    dequantize: bool | str       # "auto": by model size (train.schedule.SIZE_SCHEDULES), as float32_norms
    float32_norms: bool | str    # a quantized model's embeddings and norms in float32 (prepare_model_for_kbit_training)
    group_by_length: bool
    check_generations: bool
    seed: int
    logging_steps: int
    save_steps: int
    launcher: str = "python"

    @classmethod
    def read(cls, s: dict) -> TrainParams:
        return cls(**checked(s, "train"), launcher=str(s.get("launcher", "python")))


@dataclass(frozen=True)
class PredictParams:
    batch_size: int              # sequences at once (questions x candidates)
    max_new_tokens: int
    dequantize: bool
    num_candidates: int
    num_gpus: int                # 0 = all visible
    answer_prefix: str
    repair_columns: bool         # repair the names SQLite reports missing, or join their table (predict.choose.repair_names)

    @classmethod
    def read(cls, s: dict) -> PredictParams:
        prefix = require(s, "answer_prefix", "predict")
        if not isinstance(prefix, str):
            raise ParamError(f"predict.answer_prefix = {prefix!r}: must be a string "
                             "(\"\" for none, or the start of every answer such as SELECT)")
        return cls(**checked(s, "predict"), answer_prefix=prefix)


@dataclass(frozen=True)
class EvalParams:
    timeout: float               # seconds per query
    keep_distinct: bool
    workers: int                 # 0 = all cores
    metric: str                  # auto, spider (test-suite rules) or bird (sets of rows equal)

    @classmethod
    def read(cls, s: dict) -> EvalParams:
        return cls(**checked(s, "eval"))


class Params:
    """params.yaml, read once; each section is checked when first taken."""

    def __init__(self, document: dict, path: str | Path = "params.yaml"):
        self.document, self.path = document, Path(path)

    @classmethod
    def read(cls, path: str | Path = "params.yaml") -> Params:
        path = Path(path)
        if not path.is_file():
            raise ParamError(f"{path} not found (run from the project root)")
        with path.open(encoding="utf-8") as f:
            try:
                document = yaml.safe_load(f) or {}
            except yaml.YAMLError as error:
                raise ParamError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
        if not isinstance(document, dict):
            raise ParamError(f"{path} must hold sections such as 'train:' and 'predict:'")
        return cls(document, path)

    def section(self, name: str) -> dict[str, Any]:
        if not isinstance(self.document.get(name), dict):
            raise ParamError(f"{self.path}: section '{name}' is missing")
        return self.document[name]

    @cached_property
    def data(self) -> DataParams:
        return DataParams.read(self.section("data"))

    @cached_property
    def model(self) -> ModelParams:
        return ModelParams.read(self.section("model"))

    @cached_property
    def quant(self) -> QuantParams:
        return QuantParams.read(self.section("quant"))

    @cached_property
    def lora(self) -> LoraParams:
        return LoraParams.read(self.section("lora"))

    @cached_property
    def train(self) -> TrainParams:
        return TrainParams.read(self.section("train"))

    @cached_property
    def predict(self) -> PredictParams:
        return PredictParams.read(self.section("predict"))

    @cached_property
    def eval(self) -> EvalParams:
        return EvalParams.read(self.section("eval"))


def as_dict(params) -> dict[str, Any]:
    """A section as plain data (for fingerprints and files written beside outputs)."""
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(params).items()}


# --- the checks, each ending in one line that names the key -------------------

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
    if low_fails or high_fails or value != value:  # value != value: NaN
        low = "" if minimum is None else f"{'>' if exclusive_minimum else '>='} {minimum}"
        high = "" if maximum is None else f"<= {maximum}"
        bounds = " and ".join(b for b in (low, high) if b)
        raise ParamError(f"{name}.{key} = {value!r}: must be {kind} {bounds}".rstrip())
    return value


def auto_or(check, section: dict, key: str, name: str, **limits) -> Any:
    """"auto", or a value that passes `check`; a wrong one is named with both choices."""
    if require(section, key, name) == AUTO:
        return AUTO
    try:
        return check(section, key, name, **limits)
    except ParamError as error:
        raise ParamError(f"{error} (or {AUTO!r})") from None


def boolean(section: dict, key: str, name: str) -> bool:
    value = require(section, key, name)
    if not isinstance(value, bool):
        raise ParamError(f"{name}.{key} = {value!r}: allowed values are true, false")
    return value


def sha256(section: dict, name: str) -> str:
    """64 hex digits, or empty (not checked)."""
    value = section.get("sha256") or ""
    if not isinstance(value, str) or not (value == "" or _SHA256.fullmatch(value.strip().lower())):
        raise ParamError(f"{name}.sha256 = {value!r}: must be 64 hex digits, or '' to skip the check")
    return value.strip().lower()


def require(section: dict, key: str, name: str) -> Any:
    if key not in section:
        raise ParamError(f"{name}.{key} is missing from params.yaml")
    return section[key]
