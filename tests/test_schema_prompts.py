"""Schema text from tables.json, chat prompts and the plain prompt format, and SQL pulled out of generations."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from tiny_spider import DATABASES

from sqlora.core.errors import SqloraError
from sqlora.data.prompts import (
    SYSTEM_PROMPT,
    build_prompt,
    clean_sql,
    extract_sql,
    has_chat_template,
    one_line,
    prompt_text,
    training_example,
    training_length,
)
from sqlora.data.schema import FORMATS, load_schemas, quote, serialize_schema


@pytest.fixture
def schemas(tiny_spider):
    return load_schemas(tiny_spider / "tables.json")


def test_load_schemas(schemas):
    assert set(schemas) == set(DATABASES)
    assert schemas["school"]["primary_keys"][-1] == [10, 11]  # composite key as a list


def test_compact(schemas):
    assert serialize_schema(schemas["concert"], "compact") == "\n".join([
        "stadium(stadium_id*, name, location, capacity)",
        "singer(singer_id*, name, country, age, is_male)",
        "concert(concert_id*, concert_name, theme, stadium_id, year, date)",
        "singer_in_concert(concert_id*, singer_id*)",
        "-- foreign keys:",
        "concert.stadium_id = stadium.stadium_id",
        "singer_in_concert.concert_id = concert.concert_id",
        "singer_in_concert.singer_id = singer.singer_id",
    ])
    assert serialize_schema(schemas["missing_db"], "compact") == "airline(airline_id*, name, country)"


def test_ddl(schemas):
    assert serialize_schema(schemas["school"], "ddl") == "\n".join([
        "CREATE TABLE student (student_id number, name text, major text, age number, city text, "
        "PRIMARY KEY (student_id));",
        "CREATE TABLE course (course_id number, title text, department text, credits number, "
        "PRIMARY KEY (course_id));",
        "CREATE TABLE enrollment (student_id number, course_id number, grade number, "
        "PRIMARY KEY (student_id, course_id), FOREIGN KEY (student_id) REFERENCES student(student_id), "
        "FOREIGN KEY (course_id) REFERENCES course(course_id));",
    ])


def test_names(schemas):
    assert serialize_schema(schemas["shop"], "names") == (
        "product: product_id, name, category, price\n"
        "orders: order_id, product_id, quantity, order_date, customer_name")


def test_odd_names_are_quoted_and_old_style_composite_keys():
    db = {"db_id": "x", "table_names_original": ["people", "pet"],
          "column_names_original": [[-1, "*"], [0, "id"], [0, "Home Town"], [1, "owner_id"], [1, "name"]],
          "column_types": ["text", "number", "text", "number", "text"],
          "primary_keys": [1, 3, 4], "foreign_keys": [[3, 1]]}
    assert serialize_schema(db, "compact") == (
        'people(id*, "Home Town")\npet(owner_id*, name*)\n-- foreign keys:\npet.owner_id = people.id')
    assert serialize_schema(db, "ddl") == (
        'CREATE TABLE people (id number, "Home Town" text, PRIMARY KEY (id));\n'
        "CREATE TABLE pet (owner_id number, name text, PRIMARY KEY (owner_id, name), "
        "FOREIGN KEY (owner_id) REFERENCES people(id));")


@pytest.mark.parametrize("name, written", [
    ("singer", "singer"),
    ("_id2", "_id2"),
    ("Home Town", '"Home Town"'),
    ("2nd", '"2nd"'),
    ("order", '"order"'),   # SQLite keywords, in any case
    ("Order", '"Order"'),
    ("GROUP", '"GROUP"'),
    ("orders", "orders"),
    ('say "hi"', '"say ""hi"""'),
])
def test_a_name_is_quoted_where_sql_needs_it(name, written):
    assert quote(name) == written


def test_unknown_format(schemas):
    assert FORMATS == ("compact", "ddl", "names")
    with pytest.raises(ValueError, match="allowed values are compact, ddl, names"):
        serialize_schema(schemas["shop"], "json")


def test_build_prompt():
    messages = build_prompt("t(a*, b)", "  How many t are there? ")
    assert messages == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "Database schema:\nt(a*, b)\n\nQuestion: How many t are there?\nSQL:"},
    ]


@pytest.mark.parametrize("generation, expected", [
    ("SELECT count(*) FROM singer", "SELECT count(*) FROM singer"),
    ("  SELECT name\nFROM   singer\n\tWHERE age > 30 ", "SELECT name FROM singer WHERE age > 30"),
    ("SELECT name FROM singer;", "SELECT name FROM singer"),
    ("SELECT a FROM t; SELECT b FROM u;", "SELECT a FROM t"),
    ("```sql\nSELECT name\nFROM singer\n```", "SELECT name FROM singer"),
    ("```SQL\nSELECT 1 FROM t;\n```\nThis returns one.", "SELECT 1 FROM t"),
    ("```\nSELECT x FROM t\n```", "SELECT x FROM t"),
    ("```sql\nSELECT x FROM t", "SELECT x FROM t"),  # fence left open by max_new_tokens
    ("```sql SELECT x FROM t```", "SELECT x FROM t"),
    ("SELECT `my col` FROM t", "SELECT `my col` FROM t"),
    ("Here is the query:\n```sql\nSELECT x FROM t;\n```", "SELECT x FROM t"),
    ("SQL: SELECT name FROM singer", "SELECT name FROM singer"),
    ("SQL:\nSELECT name FROM singer", "SELECT name FROM singer"),
    ("select name from singer", "select name from singer"),
    ("SELECT name FROM singer<|im_end|>", "SELECT name FROM singer"),
    ("SELECT name FROM singer</s>garbage", "SELECT name FROM singer"),
    ("SELECT name FROM singer<|endoftext|><|im_start|>user", "SELECT name FROM singer"),
    ("SELECT name FROM singer WHERE name = 'a;b'; DROP TABLE x",
     "SELECT name FROM singer WHERE name = 'a;b'"),
    ("SELECT name FROM t WHERE name = 'it''s; fine';", "SELECT name FROM t WHERE name = 'it''s; fine'"),
    ('SELECT "semi;colon" FROM t;', 'SELECT "semi;colon" FROM t'),
    ("SELECT a FROM t WHERE b = 'New  York'", "SELECT a FROM t WHERE b = 'New  York'"),
    ("SELECT name FROM singer\n\nThis query lists all singers.", "SELECT name FROM singer"),
    ("SELECT name FROM singer\nExplanation: it lists singers", "SELECT name FROM singer"),
    ("SELECT name FROM singer\nQuestion: How many singers?\nSQL: SELECT count(*) FROM singer",
     "SELECT name FROM singer"),
    ("The answer is SELECT count(*) FROM singer", "SELECT count(*) FROM singer"),
    ("I will select the singers.\nSELECT name FROM singer", "SELECT name FROM singer"),
    ("SELECT name -- the name\nFROM singer", "SELECT name FROM singer"),
    ("<think>select what? maybe count</think>\nSELECT count(*) FROM t", "SELECT count(*) FROM t"),
    ("<think>First SELECT the rows</think>SELECT count(*) FROM t", "SELECT count(*) FROM t"),
    ("WITH x AS (SELECT a FROM t) SELECT a FROM x;", "WITH x AS (SELECT a FROM t) SELECT a FROM x"),
    ("Query with a join: SELECT a FROM t JOIN u ON t.id = u.id", "SELECT a FROM t JOIN u ON t.id = u.id"),
    ("(SELECT a FROM t) UNION (SELECT a FROM u)", "(SELECT a FROM t) UNION (SELECT a FROM u)"),
    ("SELECT a FROM t WHERE b = 'line\nbreak'", "SELECT a FROM t WHERE b = 'line break'"),
    ("", ""),
    ("   \n ", ""),
    ("I don't know.", ""),
    ("<|im_end|>", ""),
    ("```\n\n```", ""),
])
def test_extract_sql(generation, expected):
    assert extract_sql(generation) == expected


def test_clean_sql():
    assert clean_sql("SELECT  a ,  b\nFROM t ;") == "SELECT a , b FROM t"
    assert clean_sql("SELECT 'a  b'  FROM t") == "SELECT 'a  b' FROM t"


def test_a_gold_query_is_one_line_without_tabs():
    """The gold file is SQL<TAB>db_id per line: a tab or line end in the SQL would break it; the
    rest of the spacing is kept as Spider writes it."""
    assert one_line("SELECT name ,  age\tFROM singer\r\n  WHERE age  >  30 \n") == (
        "SELECT name ,  age FROM singer WHERE age  >  30")
    assert one_line("SELECT a FROM t WHERE b = 'x\ty'") == "SELECT a FROM t WHERE b = 'x y'"


# ---------------------------------------------------------------- chat template or plain format

RECORD = {"prompt": build_prompt("singer(singer_id*, name, age)", "How many singers are older than 30?"),
          "completion": [{"role": "assistant", "content": "SELECT count(*) FROM singer WHERE age > 30"}]}
PLAIN_PROMPT = (f"{SYSTEM_PROMPT}\n\nDatabase schema:\nsinger(singer_id*, name, age)\n\n"
                "Question: How many singers are older than 30?\nSQL:\n")


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    """The SmolLM2 tokenizer (with its chat template) saved once; loading a folder is fast."""
    from tiny_model import smollm2_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    smollm2_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def chat_tokenizer(tokenizer_folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_folder)


@pytest.fixture
def plain_tokenizer(tokenizer_folder):
    """Like a base model's: no chat template, a BOS before every text, eos <|endoftext|>."""
    from tiny_model import base_tokenizer
    from transformers import AutoTokenizer

    return base_tokenizer(AutoTokenizer.from_pretrained(tokenizer_folder))


def test_has_chat_template(chat_tokenizer, plain_tokenizer):
    assert has_chat_template(chat_tokenizer) and not has_chat_template(plain_tokenizer)
    assert not has_chat_template(SimpleNamespace(chat_template=""))
    assert not has_chat_template(SimpleNamespace())


def test_with_a_chat_template_the_texts_are_the_template_s(chat_tokenizer):
    text = prompt_text(chat_tokenizer, RECORD["prompt"])
    assert text == chat_tokenizer.apply_chat_template(RECORD["prompt"], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert training_example(chat_tokenizer, {**RECORD, "db_id": "x"}) == {
        "prompt": RECORD["prompt"], "completion": RECORD["completion"]}  # TRL conversational records
    assert training_length(chat_tokenizer, RECORD) == len(chat_tokenizer.apply_chat_template(
        RECORD["prompt"] + RECORD["completion"], tokenize=True, return_dict=False))


def test_plain_prompt_text(plain_tokenizer):
    """The messages' texts a blank line apart, ending "SQL:" and a newline; the BOS the tokenizer
    adds in training comes first, since generation tokenizes without special tokens."""
    assert prompt_text(plain_tokenizer, RECORD["prompt"]) == plain_tokenizer.bos_token + PLAIN_PROMPT
    plain_tokenizer.add_bos_token = False
    assert prompt_text(plain_tokenizer, RECORD["prompt"]) == PLAIN_PROMPT


def test_plain_training_example_ends_with_eos(plain_tokenizer):
    example = training_example(plain_tokenizer, {**RECORD, "db_id": "x", "question": "q"})
    assert example == {"prompt": PLAIN_PROMPT,
                       "completion": "SELECT count(*) FROM singer WHERE age > 30<|endoftext|>"}
    ids = plain_tokenizer(example["prompt"] + example["completion"])["input_ids"]
    assert ids[-1] == plain_tokenizer.eos_token_id and ids.count(plain_tokenizer.eos_token_id) == 1
    assert training_length(plain_tokenizer, example) == len(ids)


def test_plain_prompt_tokens_are_the_same_in_training_and_generation(plain_tokenizer):
    """TRL tokenizes the prompt string with special tokens; generation tokenizes prompt_text without."""
    example = training_example(plain_tokenizer, RECORD)
    trained = plain_tokenizer(example["prompt"] + example["completion"])["input_ids"]
    generated = plain_tokenizer(prompt_text(plain_tokenizer, RECORD["prompt"]), add_special_tokens=False)["input_ids"]
    assert trained[0] == plain_tokenizer.bos_token_id
    assert trained[:len(generated)] == generated
    assert plain_tokenizer.decode(trained[len(generated):]) == example["completion"]


def test_plain_format_needs_an_eos_token():
    tokenizer = SimpleNamespace(chat_template=None, eos_token=None)
    with pytest.raises(SqloraError, match="neither a chat template nor an eos token"):
        training_example(tokenizer, RECORD)
