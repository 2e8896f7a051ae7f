"""A tables.json entry read off a SQLite file: what Spider's entries hold, and nothing written."""

from __future__ import annotations

import sqlite3

import pytest

from sqlora.core.errors import SqloraError
from sqlora.data.schema import serialize_schema
from sqlora.data.sqlite_schema import column_type, natural_name, read_schema


def make_shop(path):
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE customer (id INTEGER PRIMARY KEY, name VARCHAR(40), city TEXT, joined DATE);
            CREATE TABLE "order" (order_id INT, customer_id INT REFERENCES customer, total REAL,
                                  paid BOOLEAN, PRIMARY KEY (order_id),
                                  FOREIGN KEY (customer_id) REFERENCES customer(id));
            CREATE TABLE OrderLine (order_id INT, line INT, item BLOB, PRIMARY KEY (order_id, line),
                                    FOREIGN KEY (order_id) REFERENCES "order"(order_id));
        """)
    db.close()
    return path


def test_the_entry_has_spiders_fields(tmp_path):
    path = make_shop(tmp_path / "shop.sqlite")
    before = sorted(p.name for p in tmp_path.iterdir()), path.read_bytes()
    entry = read_schema(path, "shop")
    assert entry["table_names_original"] == ["customer", "order", "OrderLine"]
    assert entry["table_names"] == ["customer", "order", "order line"]
    assert entry["column_names_original"][:3] == [[-1, "*"], [0, "id"], [0, "name"]]
    assert entry["column_types"] == ["text", "number", "text", "text", "time", "number", "number", "number",
                                     "boolean", "number", "number", "others"]
    assert entry["primary_keys"] == [1, 5, [9, 10]]
    assert sorted(entry["foreign_keys"]) == [[6, 1], [9, 5]]
    assert (sorted(p.name for p in tmp_path.iterdir()), path.read_bytes()) == before  # nothing written
    text = serialize_schema(entry, "compact")
    assert 'customer(id*, name, city, joined)' in text and '"order".customer_id = customer.id' in text


@pytest.mark.parametrize("declared, expected", [("INTEGER", "number"), ("varchar(20)", "text"), ("", "text"),
                                                ("DATETIME", "time"), ("bool", "boolean"), ("BLOB", "others"),
                                                ("DOUBLE PRECISION", "number")])
def test_column_types_in_spiders_classes(declared, expected):
    assert column_type(declared) == expected


def test_natural_names():
    assert natural_name("CustomerOrders") == "customer orders" and natural_name("pet_type") == "pet type"


def test_a_file_that_is_not_sqlite_or_has_no_tables_is_one_error(tmp_path):
    (tmp_path / "notes.sqlite").write_text("these are notes, not a database " * 20)
    with pytest.raises(SqloraError, match="not a SQLite database"):
        read_schema(tmp_path / "notes.sqlite", "notes")
    sqlite3.connect(tmp_path / "empty.sqlite").close()
    with pytest.raises(SqloraError, match="has no tables"):
        read_schema(tmp_path / "empty.sqlite", "empty")
    with pytest.raises(SqloraError, match="no such database file"):
        read_schema(tmp_path / "missing.sqlite", "missing")


def test_names_with_spaces_and_quotes(tmp_path):
    """BIRD-style names: a table and columns with spaces, brackets and a double quote."""
    path = tmp_path / "odd.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript('''
            CREATE TABLE "School ""Main"" List" ("CDS Code" TEXT PRIMARY KEY, "Enrollment (K-12)" REAL);
            CREATE TABLE frpm (id INT PRIMARY KEY, code TEXT REFERENCES "School ""Main"" List");
        ''')
    db.close()
    entry = read_schema(path, "odd")
    assert entry["table_names_original"] == ['School "Main" List', "frpm"]
    assert entry["column_names_original"][1:] == [[0, "CDS Code"], [0, "Enrollment (K-12)"], [1, "id"], [1, "code"]]
    assert entry["primary_keys"] == [1, 3] and entry["foreign_keys"] == [[4, 1]]
