"""sqlora ask: ask a SQLite database a question in plain words, and get the SQL and its rows.

    sqlora ask --db shop.sqlite "Which customers ordered more than 3 times?"
    sqlora ask --db shop.sqlite                  # an interactive prompt; Ctrl-D ends it
    sqlora ask --db shop.sqlite --json "How many customers live in Paris?"

The model is the pipeline's fine-tuned adapter over its prepared base model (outputs/adapter,
outputs/base_model); --model takes a base model folder, a merged model (stages/export.py), a hub
id or a .gguf file instead. The schema is read off the database file and written in the format
the model was trained with, as the record beside the adapter says. The model's candidates are
chosen and repaired as the predict stage does (params.yaml's predict section where there is
one), every query run through the evaluator's read-only guard: nothing is ever written to the
database or beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sqlora.core.errors import SqloraError, run_stage
from sqlora.core.params import AUTO, SCHEMA_FORMATS, Params, PredictParams, QuantParams, boolean, choice
from sqlora.data.database_prompt import DatabasePrompts, PromptFormat
from sqlora.data.prompts import build_prompt, prompt_text
from sqlora.data.schema import schema_format_for, serialize_schema
from sqlora.data.sqlite_schema import read_schema
from sqlora.model.loading import (
    ADAPTER_RECORD,
    MODEL_FACTS,
    context_length,
    is_adapter,
    read_adapter_record,
    resolve_model_source,
    saved_parameter_count,
)
from sqlora.predict.answer import Answer, answer_on_database
from sqlora.sql.sandbox import ReadOnlyDatabase, lock_problem, unread_wal

ADAPTER = Path("outputs/adapter")
BASE = Path("outputs/base_model")
PARAMS = Path("params.yaml")
MAX_CELL_CHARS = 60
# params.yaml's values, for a database asked outside the project (tests/test_ask.py checks them)
DEFAULT_PARAMS = {
    "quant": {"bits": 4, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
              "bnb_4bit_compute_dtype": "auto"},
    "predict": {"batch_size": 1024, "max_new_tokens": 128, "dequantize": True, "num_candidates": 2, "num_gpus": 0,
                "answer_prefix": "SELECT", "repair_columns": True},
    "eval": {"timeout": 5.0, "keep_distinct": False, "workers": 0, "metric": "auto"},
    "data": {"schema_format": "auto", "value_hints": True},
    "model": {"trust_remote_code": False},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sqlora ask", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question", nargs="?", help="the question; leave it out to ask one after another")
    parser.add_argument("--db", type=Path, required=True, help="the SQLite database file")
    parser.add_argument("--model", help=f"adapter or model folder, hub id or .gguf file (default: {ADAPTER.as_posix()} "
                                        f"over {BASE.as_posix()})")
    parser.add_argument("--base", type=Path, help="an adapter's base model folder (default: the one its training "
                                                  f"record names, else {BASE.as_posix()})")
    parser.add_argument("--json", action="store_true", help="print one JSON object per answer")
    parser.add_argument("--max-rows", type=int, default=20, help="rows shown (default 20); all are counted")
    parser.add_argument("--params", type=Path, help="decoding settings: its predict, quant and eval sections "
                                                    "(default: ./params.yaml where there is one, else the defaults)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the GPU if there is one)")
    args = parser.parse_args(argv)
    if args.max_rows < 0:
        parser.error("--max-rows must be 0 or more")
    return args


def ask(args: argparse.Namespace) -> None:
    if args.question is not None and not args.question.strip():
        raise SqloraError("the question is empty: ask something, or leave it out to ask one question after another")
    settings = read_settings(args.params or PARAMS, required=args.params is not None)
    check_unlocked(args.db)
    read_schema(args.db, args.db.stem)  # a missing file, not SQLite, no tables: one error line
    model_choice = choose_model(args.model, args.base, settings)
    note(f"model: {model_choice.describe()}")
    if unread_wal(args.db):
        note(f"note: {args.db.name}-wal holds changes a program has not yet written into {args.db.name}; "
             "answers leave them out (they are in once that program closes the database)")

    answers = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # libraries' messages stay off the answers
        model = load_model(model_choice, settings, args.device, sample_prompt(args.db))
        prompt_format, why = choose_prompt_format(model_choice, settings, model.parameters)
        note(f"prompt: {prompt_format.describe()}, {why}")
        prompts = DatabasePrompts(args.db, prompt_format)
        with ReadOnlyDatabase(args.db) as database:
            session = Session(model, prompts, database, args.db, settings, args.max_rows)
            if args.question is not None:
                show(session.answer(args.question), args.json, answers)
                return
            for question in typed_questions(args.db, answers):
                try:
                    result = session.answer(question)
                except SqloraError as error:
                    note(f"error: {error}")
                    continue
                except KeyboardInterrupt:
                    note("interrupted")
                    continue
                show(result, args.json, answers)


# ---------------------------------------------------------------- settings and the database

@dataclass(frozen=True)
class Settings:
    quant: QuantParams
    predict: PredictParams
    timeout: float
    schema_format: str           # data.schema_format: auto or a format
    value_hints: bool
    trust_remote_code: bool
    source: str                  # where they came from


def read_settings(path: Path, required: bool = False) -> Settings:
    """params.yaml's quant, predict and eval sections (and data's schema format and value hints,
    for a model that has no training record) over the defaults, each value checked; a missing
    file gives the defaults, unless it is `required`."""
    document = Params.read(path).document if path.is_file() or required else {}
    merged = {name: {**defaults, **(document.get(name) or {})} for name, defaults in DEFAULT_PARAMS.items()}
    params = Params(merged, path)
    return Settings(quant=params.quant, predict=params.predict, timeout=params.eval.timeout,
                    schema_format=choice(merged["data"], "schema_format", (AUTO, *SCHEMA_FORMATS), "data"),
                    value_hints=boolean(merged["data"], "value_hints", "data"),
                    trust_remote_code=boolean(merged["model"], "trust_remote_code", "model"),
                    source=path.as_posix() if path.is_file() else "the defaults")


def check_unlocked(database: Path) -> None:
    problem = lock_problem(database)
    if problem:
        raise SqloraError(f"{database}: cannot read it now: {problem}")


def sample_prompt(database: Path) -> list[dict]:
    """A prompt on this database, for the check that float16 holds the model's activations."""
    return build_prompt(serialize_schema(read_schema(database, database.stem), "compact"), "How many are there?")


# ---------------------------------------------------------------- the model

@dataclass(frozen=True)
class ModelChoice:
    kind: str                    # adapter, prepared (by prepare-model), folder, gguf or hub
    location: str                # its folder, file or hub id
    quant: QuantParams           # how it is loaded
    base: Path | None = None     # an adapter's base model
    record: dict | None = None   # its training record (an adapter's, or a merged model's)
    sha256: str = ""

    def describe(self) -> str:
        bits = "16-bit" if self.quant.bits == 16 else f"{self.quant.bits}-bit {self.quant.bnb_4bit_quant_type}"
        if self.kind == "adapter":
            how = "as trained" if self.record and self.record.get("quant") else "as quant in params.yaml says"
            return f"{self.location} (LoRA adapter) over {self.base.as_posix()}, {bits} {how}"
        if self.kind == "prepared":
            return f"{self.location}, {bits} as the predict stage loads a base model"
        what = {"folder": "model folder", "gguf": "GGUF file", "hub": "hub model"}[self.kind]
        return f"{self.location} ({what}), as saved"


def choose_model(name: str | None, base: Path | None, settings: Settings) -> ModelChoice:
    """What --model (default: the pipeline's adapter) names, and how to load it: an adapter over
    its base as it was trained, a base model that prepare-model made as the predict stage loads
    it, any other model as saved (a merged one holds the adapter's weights as trained)."""
    if name is None:
        if not ADAPTER.is_dir():
            raise SqloraError(f"no {ADAPTER.as_posix()} here: run the pipeline (dvc repro) from this folder first, or "
                              "name a model with --model (a folder such as outputs/base_model, a hub id or a .gguf)")
        name = ADAPTER.as_posix()
    path = Path(name).expanduser()
    if path.is_dir() and is_adapter(path):
        record = read_adapter_record(path)
        recorded_base = (record or {}).get("base")
        if base is not None:
            named = "--base"
        elif isinstance(recorded_base, str):
            # training ran from the project folder: a relative base is found from here or above the adapter
            tried = [Path(recorded_base)] + [folder / recorded_base for folder in path.resolve().parents[:3]]
            base = next((b for b in tried if (b / "config.json").is_file()), tried[0])
            named = f"its training record, {ADAPTER_RECORD}"
        else:
            base, named = BASE, "the default"
        if not (base / "config.json").is_file():
            raise SqloraError(f"the base model of adapter {path} is not at {base.as_posix()} ({named}): "
                              "give its folder with --base")
        quant = settings.quant
        if record and isinstance(record.get("quant"), dict):
            quant = Params({"quant": record["quant"]}, path / ADAPTER_RECORD).quant
        return ModelChoice("adapter", path.as_posix(), quant, base=base, record=record)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SqloraError(f"--model {name}: the folder holds no model (no config.json or adapter_config.json)")
        record = read_adapter_record(path)
        if (path / MODEL_FACTS).is_file() and record is None:
            return ModelChoice("prepared", path.as_posix(), settings.quant)
        return ModelChoice("folder", path.as_posix(), as_saved(settings.quant), record=record)
    if not name.startswith("pkg:"):  # pkg:<package>/<file>.gguf: resolve_model_source finds it
        if path.suffix.lower() == ".gguf" and not path.is_file():
            raise SqloraError(f"--model {name}: no such .gguf file")
        if path.suffix.lower() != ".gguf" and (path.is_absolute() or name.startswith((".", "~"))
                                               or (path.parent != Path(".") and path.parent.is_dir())):
            raise SqloraError(f"--model {name}: no such model folder")
    source = resolve_model_source(name)
    return ModelChoice(source.kind, source.location if source.kind == "gguf" else name, as_saved(settings.quant),
                       sha256=source.sha256)


def as_saved(quant: QuantParams) -> QuantParams:
    return QuantParams(bits=16, bnb_4bit_compute_dtype=quant.bnb_4bit_compute_dtype)


class LoadedModel:
    """The model and its tokenizer, loaded once, and the predict stage's decoding with them."""

    def __init__(self, model, tokenizer, decoding: PredictParams, parameters: int):
        self.model, self.tokenizer, self.decoding, self.parameters = model, tokenizer, decoding, parameters
        limits = [n for n in (context_length(model), getattr(tokenizer, "model_max_length", None))
                  if isinstance(n, int) and 0 < n < 10**7]
        self.context_length = min(limits) if limits else None

    def prompt_tokens(self, messages: list[dict]) -> int:
        text = prompt_text(self.tokenizer, messages) + self.decoding.answer_prefix
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def max_prompt_tokens(self) -> int | None:
        """The longest prompt that leaves room for the answer in the model's context."""
        return None if self.context_length is None else self.context_length - self.decoding.max_new_tokens

    def generations(self, messages: list[dict]) -> list[str]:
        """The model's candidates for one prompt, best first, as the predict stage decodes; each
        ends where its SQL does, or where it starts repeating itself."""
        from sqlora.predict.generation import generate_candidates

        decoding = self.decoding
        return generate_candidates(self.model, self.tokenizer, [messages], batch_size=decoding.num_candidates,
                                   max_new_tokens=decoding.max_new_tokens, answer_prefix=decoding.answer_prefix,
                                   num_candidates=decoding.num_candidates, stop_early=True, desc="answering")[0]


def load_model(chosen: ModelChoice, settings: Settings, device: str | None, sample: list[dict]) -> LoadedModel:
    """The chosen model on `device` (default: the GPU if there is one, else the CPU)."""
    from sqlora.model.devices import cap_gpu_memory, default_device
    from sqlora.model.layers import swap_rms_norms
    from sqlora.model.loading import ModelSource, load_source
    from sqlora.model.precision import compute_dtype
    from sqlora.predict.fanout import load_for_prompts

    cap_gpu_memory()
    device = device or default_device()
    load = {"device": device, "trust_remote_code": settings.trust_remote_code}
    if chosen.kind in ("gguf", "hub"):
        source = ModelSource(chosen.kind, chosen.location, chosen.sha256)
        model, tokenizer = load_source(source, compute_dtype(chosen.quant.bnb_4bit_compute_dtype), **load)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.eval()
        parameters = sum(p.numel() for p in model.parameters())
    else:
        folder = Path(chosen.location)
        base = chosen.base or folder
        model, tokenizer, _ = load_for_prompts(folder, base, chosen.quant, [sample],
                                               dequantize=settings.predict.dequantize, **load)
        parameters = saved_parameter_count(base)
    swap_rms_norms(model)
    return LoadedModel(model, tokenizer, settings.predict, parameters)


def choose_prompt_format(chosen: ModelChoice, settings: Settings, parameters: int) -> tuple[PromptFormat, str]:
    """The prompt format training recorded; for a model without that record, the one preprocess
    gives a model of its size with these settings. Returns it and why it was chosen."""
    where = f"{chosen.location}/{ADAPTER_RECORD}"
    recorded = (chosen.record or {}).get("prompt_format")
    if recorded is not None:
        return PromptFormat.from_record(recorded, where), f"as training recorded it ({where})"
    schema_format = settings.schema_format
    if schema_format == AUTO:
        schema_format = schema_format_for(parameters)
    missing = "no training record" if chosen.record is None else "a training record without a prompt format"
    return (PromptFormat(schema_format, settings.value_hints),
            f"as preprocess prompts a model of {parameters / 1e6:.0f}M parameters with {settings.source} "
            f"({chosen.location} has {missing})")


# ---------------------------------------------------------------- questions and answers

@dataclass
class Reply:
    answer: Answer
    seconds: float


class Session:
    """Questions about one database, answered by one loaded model."""

    def __init__(self, model: LoadedModel, prompts: DatabasePrompts, database: ReadOnlyDatabase, path: Path,
                 settings: Settings, max_rows: int):
        self.model, self.prompts, self.database, self.path = model, prompts, database, path
        self.settings, self.max_rows = settings, max_rows

    def answer(self, question: str) -> Reply:
        started = time.perf_counter()
        check_unlocked(self.path)
        fitted = self.prompts.prompt(question, self.model.prompt_tokens, self.model.max_prompt_tokens())
        if fitted.note:
            note(fitted.note)
        generations = self.model.generations(fitted.messages)
        answer = answer_on_database(generations, self.database, repair=self.settings.predict.repair_columns,
                                    timeout=self.settings.timeout, max_rows=self.max_rows)
        return Reply(answer, time.perf_counter() - started)


def end_of_input_keys() -> str:
    """The keys that end typed input in this platform's terminal."""
    return "Ctrl-Z then Enter" if sys.platform == "win32" else "Ctrl-D"


def typed_questions(database: Path, terminal):
    """Questions typed at a prompt on `terminal` (the real stdout), or read line by line from
    piped input, until it ends (Ctrl-D) or Ctrl-C is pressed at the prompt; blank lines are
    skipped."""
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - line editing and history for input(), where the platform has it
        note(f"Ask about {database.name}; an empty line does nothing, {end_of_input_keys()} ends.")
    while True:
        try:
            if interactive:
                with contextlib.redirect_stdout(terminal):
                    line = input("? ")
            else:
                line = sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            if interactive:
                print(file=sys.stderr)
            return
        if not interactive and not line:
            return
        if line.strip():
            yield line.strip()


def show(reply: Reply, as_json: bool, out) -> None:
    answer = reply.answer
    error = "the model wrote no SQL" if answer.error == "empty prediction" else answer.error
    if as_json:
        rows = [[json_value(value) for value in row] for row in answer.rows]
        record = {"sql": answer.sql, "columns": answer.columns, "rows": rows, "row_count": answer.row_count,
                  "error": error, "seconds": round(reply.seconds, 3)}
        print(json.dumps(record, ensure_ascii=False, allow_nan=False), file=out, flush=True)
        return
    lines = [answer.sql or "(no SQL)", ""]
    if error:
        lines.append(f"no rows: {error}")
    else:
        lines += table(answer.columns, answer.rows)
        shown = f", the first {len(answer.rows)} shown" if len(answer.rows) < answer.row_count else ""
        lines.append(f"({answer.row_count} row{'' if answer.row_count == 1 else 's'}{shown})")
    lines.append(f"{reply.seconds:.2f} s")
    print("\n".join(lines) + "\n", file=out, flush=True)


def table(columns: list[str], rows: list[tuple]) -> list[str]:
    """Rows as an aligned text table under their column names; numbers to the right."""
    cells = [[cell_text(value) for value in row] for row in rows]
    widths = [max([len(name)] + [len(row[i]) for row in cells]) for i, name in enumerate(columns)]
    numeric = [bool(rows) and all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
               for i in range(len(columns))]

    def line(values: list[str]) -> str:
        return " | ".join(v.rjust(w) if right else v.ljust(w)
                          for v, w, right in zip(values, widths, numeric)).rstrip()

    return [line(columns), "-+-".join("-" * w for w in widths)] + [line(row) for row in cells]


def cell_text(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = str(value).replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ")
    return text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS - 3] + "..."


def json_value(value):
    """A database value as JSON holds it: a blob as hex text, an infinite float as text."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    run_stage(lambda: ask(args))


if __name__ == "__main__":
    main()
