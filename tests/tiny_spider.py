"""A tiny Spider-format release for tests: three small SQLite databases and their questions.

build_tiny_spider(root) writes root/{tables.json, train_spider.json, dev.json, dev_gold.sql,
train_gold.sql, database/<db_id>/<db_id>.sqlite}. Its quirks, on purpose:
  - `missing_db` is in tables.json but has no .sqlite file (2 dev and 2 train questions use it):
    dev questions on it are skipped, train questions are kept.
  - one train question uses `ghost_db`, which tables.json does not know: it is skipped.
  - school.enrollment has a composite primary key written as a list (newer tables.json style).
"""

from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path

# db_id -> tables: (name, [(column, sqlite type, spider type)], primary key columns, foreign keys)
# a foreign key is (column, referenced table, referenced column)
DATABASES = {
    "concert": [
        ("stadium", [("stadium_id", "INTEGER", "number"), ("name", "TEXT", "text"),
                     ("location", "TEXT", "text"), ("capacity", "INTEGER", "number")],
         ["stadium_id"], []),
        ("singer", [("singer_id", "INTEGER", "number"), ("name", "TEXT", "text"),
                    ("country", "TEXT", "text"), ("age", "INTEGER", "number"),
                    ("is_male", "BOOLEAN", "boolean")],
         ["singer_id"], []),
        ("concert", [("concert_id", "INTEGER", "number"), ("concert_name", "TEXT", "text"),
                     ("theme", "TEXT", "text"), ("stadium_id", "INTEGER", "number"),
                     ("year", "INTEGER", "number"), ("date", "TEXT", "time")],
         ["concert_id"], [("stadium_id", "stadium", "stadium_id")]),
        ("singer_in_concert", [("concert_id", "INTEGER", "number"), ("singer_id", "INTEGER", "number")],
         ["concert_id", "singer_id"],
         [("concert_id", "concert", "concert_id"), ("singer_id", "singer", "singer_id")]),
    ],
    "school": [
        ("student", [("student_id", "INTEGER", "number"), ("name", "TEXT", "text"),
                     ("major", "TEXT", "text"), ("age", "INTEGER", "number"), ("city", "TEXT", "text")],
         ["student_id"], []),
        ("course", [("course_id", "INTEGER", "number"), ("title", "TEXT", "text"),
                    ("department", "TEXT", "text"), ("credits", "INTEGER", "number")],
         ["course_id"], []),
        ("enrollment", [("student_id", "INTEGER", "number"), ("course_id", "INTEGER", "number"),
                        ("grade", "REAL", "number")],
         ["student_id", "course_id"],
         [("student_id", "student", "student_id"), ("course_id", "course", "course_id")]),
    ],
    "shop": [
        ("product", [("product_id", "INTEGER", "number"), ("name", "TEXT", "text"),
                     ("category", "TEXT", "text"), ("price", "REAL", "number")],
         ["product_id"], []),
        ("orders", [("order_id", "INTEGER", "number"), ("product_id", "INTEGER", "number"),
                    ("quantity", "INTEGER", "number"), ("order_date", "TEXT", "time"),
                    ("customer_name", "TEXT", "text")],
         ["order_id"], [("product_id", "product", "product_id")]),
    ],
    "missing_db": [  # schema only: no .sqlite file is written
        ("airline", [("airline_id", "INTEGER", "number"), ("name", "TEXT", "text"),
                     ("country", "TEXT", "text")], ["airline_id"], []),
    ],
}
COMPOSITE_KEY_AS_LIST = {("school", "enrollment")}

ROWS = {
    "concert": {
        "stadium": [(1, "Stark's Park", "Raith Rovers", 10104), (2, "Somerset Park", "Ayr United", 11998),
                    (3, "Hampden Park", "Queen's Park", 52500), (4, "Glebe Park", "Brechin City", 3960)],
        "singer": [(1, "Joe Sharp", "Netherlands", 52, 0), (2, "Timbaland", "United States", 32, 1),
                   (3, "Justin Brown", "France", 29, 1), (4, "Rose White", "France", 41, 0),
                   (5, "John Nizinik", "France", 43, 1), (6, "Tribal King", "United States", 25, 1)],
        "concert": [(1, "Auditions", "Free choice", 1, 2014, "2014-03-01"),
                    (2, "Super bootcamp", "Free choice 2", 2, 2014, "2014-06-12"),
                    (3, "Home Visits", "Bleeding Love", 2, 2015, "2015-02-20"),
                    (4, "Week 1", "Wide Awake", 3, 2014, "2014-09-05"),
                    (5, "Week 2", "Party All Night", 3, 2015, "2015-10-31")],
        "singer_in_concert": [(1, 2), (1, 3), (1, 5), (2, 3), (2, 6), (3, 5), (4, 4), (5, 2), (5, 3)],
    },
    "school": {
        "student": [(1, "Alice Chen", "Biology", 20, "Boston"), (2, "Bob Smith", "History", 22, "Chicago"),
                    (3, "Carla Diaz", "Biology", 19, "Boston"), (4, "Dan Okafor", "Physics", 23, "Denver"),
                    (5, "Eva Novak", "History", 21, "Chicago"), (6, "Farid Khan", "Physics", 20, "Austin")],
        "course": [(101, "Genetics", "Biology", 4), (102, "World History", "History", 3),
                   (103, "Mechanics", "Physics", 4), (104, "Statistics", "Mathematics", 3),
                   (105, "Ecology", "Biology", 3), (106, "Astronomy", "Physics", 3)],
        "enrollment": [(1, 101, 3.7), (1, 104, 3.3), (2, 102, 2.9), (3, 101, 3.9), (3, 105, 3.1),
                       (4, 103, 3.5), (4, 104, 3.8), (5, 102, 3.2), (6, 103, 2.7)],
    },
    "shop": {
        "product": [(1, "Espresso Machine", "Kitchen", 249.0), (2, "Desk Lamp", "Office", 35.5),
                    (3, "Chef Knife", "Kitchen", 89.9), (4, "Notebook", "Office", 4.25),
                    (5, "Yoga Mat", "Sports", 29.0)],
        "orders": [(1, 1, 1, "2023-01-15", "Maria Lopez"), (2, 2, 3, "2023-02-02", "Tom Baker"),
                   (3, 4, 10, "2023-02-10", "Maria Lopez"), (4, 3, 2, "2023-03-05", "Li Wei"),
                   (5, 2, 1, "2023-03-21", "Li Wei"), (6, 4, 5, "2023-04-01", "Tom Baker"),
                   (7, 1, 1, "2023-04-18", "Sara Cohen")],
    },
}

TRAIN = [
    ("concert", "How many singers are there?", "SELECT count(*) FROM singer"),
    ("concert", "List the names of all stadiums.", "SELECT name FROM stadium"),
    ("concert", "What are the names of singers from France?",
     "SELECT name FROM singer WHERE country = 'France'"),
    ("concert", "Show the name and capacity of the stadium with the largest capacity.",
     "SELECT name, capacity FROM stadium ORDER BY capacity DESC LIMIT 1"),
    ("concert", "What is the average age of all singers?", "SELECT avg(age) FROM singer"),
    ("concert", "How many concerts were held in 2015?", "SELECT count(*) FROM concert WHERE year = 2015"),
    ("concert", "List each country and the number of singers from it.",
     "SELECT country, count(*) FROM singer GROUP BY country"),
    ("concert", "What are the names of the concerts held at Somerset Park?",
     "SELECT T1.concert_name FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
     "WHERE T2.name = 'Somerset Park'"),
    ("concert", "Which singers performed in the concert named Auditions?",
     "SELECT T3.name FROM concert AS T1 JOIN singer_in_concert AS T2 ON T1.concert_id = T2.concert_id "
     "JOIN singer AS T3 ON T2.singer_id = T3.singer_id WHERE T1.concert_name = 'Auditions'"),
    ("concert", "Which stadiums have never hosted a concert?",
     "SELECT name FROM stadium WHERE stadium_id NOT IN (SELECT stadium_id FROM concert)"),
    ("concert", "List singers older than the average singer age, oldest first.",
     "SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer) ORDER BY age DESC"),
    ("concert", "How many concerts has each singer performed in? Show names and counts.",
     "SELECT T2.name, count(*) FROM singer_in_concert AS T1 JOIN singer AS T2 "
     "ON T1.singer_id = T2.singer_id "
     "GROUP BY T1.singer_id"),
    ("concert", "What is the theme of the most recent concert?",
     "SELECT theme FROM concert ORDER BY date DESC LIMIT 1"),
    ("concert", "How many male singers are there?", "SELECT count(*) FROM singer WHERE is_male = 1"),
    ("school", "How many students are there?", "SELECT count(*) FROM student"),
    ("school", "List the titles of all courses.", "SELECT title FROM course"),
    ("school", "What are the names of students majoring in Physics?",
     "SELECT name FROM student WHERE major = 'Physics'"),
    ("school", "Which courses have 4 credits?", "SELECT title FROM course WHERE credits = 4"),
    ("school", "What is the average grade in the Genetics course?",
     "SELECT avg(T1.grade) FROM enrollment AS T1 JOIN course AS T2 ON T1.course_id = T2.course_id "
     "WHERE T2.title = 'Genetics'"),
    ("school", "How many students live in each city?", "SELECT city, count(*) FROM student GROUP BY city"),
    ("school", "Who is the youngest student?", "SELECT name FROM student ORDER BY age ASC LIMIT 1"),
    ("school", "Which majors have more than one student?",
     "SELECT major FROM student GROUP BY major HAVING count(*) > 1"),
    ("school", "List the names of students enrolled in Statistics.",
     "SELECT T1.name FROM student AS T1 JOIN enrollment AS T2 ON T1.student_id = T2.student_id "
     "JOIN course AS T3 ON T2.course_id = T3.course_id WHERE T3.title = 'Statistics'"),
    ("school", "Which courses have no students enrolled?",
     "SELECT title FROM course WHERE course_id NOT IN (SELECT course_id FROM enrollment)"),
    ("school", "What is the total number of credits offered by each department?",
     "SELECT department, sum(credits) FROM course GROUP BY department"),
    ("school", "Find the students who take both Genetics and Ecology.",
     "SELECT T1.name FROM student AS T1 JOIN enrollment AS T2 ON T1.student_id = T2.student_id "
     "JOIN course AS T3 ON T2.course_id = T3.course_id WHERE T3.title = 'Genetics' INTERSECT "
     "SELECT T1.name FROM student AS T1 JOIN enrollment AS T2 ON T1.student_id = T2.student_id "
     "JOIN course AS T3 ON T2.course_id = T3.course_id WHERE T3.title = 'Ecology'"),
    ("school", "What is the highest grade ever given?", "SELECT max(grade) FROM enrollment"),
    ("shop", "How many products are there?", "SELECT count(*) FROM product"),
    ("shop", "List all product names and prices.", "SELECT name, price FROM product"),
    ("shop", "Which products cost more than 50?", "SELECT name FROM product WHERE price > 50"),
    ("shop", "What is the cheapest product?", "SELECT name FROM product ORDER BY price ASC LIMIT 1"),
    ("shop", "How many orders did Maria Lopez place?",
     "SELECT count(*) FROM orders WHERE customer_name = 'Maria Lopez'"),
    ("shop", "What is the average price of products in each category?",
     "SELECT category, avg(price) FROM product GROUP BY category"),
    ("shop", "List the names of products that were ordered in March 2023.",
     "SELECT DISTINCT T1.name FROM product AS T1 JOIN orders AS T2 ON T1.product_id = T2.product_id "
     "WHERE T2.order_date LIKE '2023-03%'"),
    ("shop", "Which products have never been ordered?",
     "SELECT name FROM product WHERE product_id NOT IN (SELECT product_id FROM orders)"),
    ("shop", "What is the total quantity ordered for each product? Show product names.",
     "SELECT T1.name, sum(T2.quantity) FROM product AS T1 JOIN orders AS T2 "
     "ON T1.product_id = T2.product_id "
     "GROUP BY T1.product_id"),
    ("shop", "Which customer ordered the most items in total?",
     "SELECT customer_name FROM orders GROUP BY customer_name ORDER BY sum(quantity) DESC LIMIT 1"),
    ("missing_db", "How many airlines are there?", "SELECT count(*) FROM airline"),
    ("missing_db", "List the names of airlines from Canada.",
     "SELECT name FROM airline WHERE country = 'Canada'"),
    ("ghost_db", "How many ghosts are there?", "SELECT count(*) FROM ghost"),
]

DEV = [
    ("concert", "How many stadiums are there?", "SELECT count(*) FROM stadium"),
    ("concert", "Show the names and ages of all singers, oldest first.",
     "SELECT name, age FROM singer ORDER BY age DESC"),
    ("concert", "What is the maximum capacity among all stadiums?", "SELECT max(capacity) FROM stadium"),
    ("concert", "How many singers are from the United States?",
     "SELECT count(*) FROM singer WHERE country = 'United States'"),
    ("concert", "For each year, how many concerts were held?",
     "SELECT year, count(*) FROM concert GROUP BY year"),
    ("concert", "Show the name and location of the stadium that hosted the most concerts.",
     "SELECT T2.name, T2.location FROM concert AS T1 JOIN stadium AS T2 "
     "ON T1.stadium_id = T2.stadium_id "
     "GROUP BY T1.stadium_id ORDER BY count(*) DESC LIMIT 1"),
    ("concert", "Which singers never performed in any concert?",
     "SELECT name FROM singer WHERE singer_id NOT IN (SELECT singer_id FROM singer_in_concert)"),
    ("concert", "Which countries have both singers older than 40 and singers younger than 30?",
     "SELECT country FROM singer WHERE age > 40 INTERSECT SELECT country FROM singer WHERE age < 30"),
    ("concert", "List the concert names and the number of singers in each, for concerts held in 2014.",
     "SELECT T1.concert_name, count(*) FROM concert AS T1 JOIN singer_in_concert AS T2 "
     "ON T1.concert_id = T2.concert_id WHERE T1.year = 2014 GROUP BY T1.concert_id"),
    ("school", "List the names of all students.", "SELECT name FROM student"),
    ("school", "How many courses does the Biology department offer?",
     "SELECT count(*) FROM course WHERE department = 'Biology'"),
    ("school", "What is the average age of students in each major?",
     "SELECT major, avg(age) FROM student GROUP BY major"),
    ("school", "Which student has the highest grade? Give the name.",
     "SELECT T1.name FROM student AS T1 JOIN enrollment AS T2 ON T1.student_id = T2.student_id "
     "ORDER BY T2.grade DESC LIMIT 1"),
    ("school", "Which cities have students majoring in Biology but none in Physics?",
     "SELECT city FROM student WHERE major = 'Biology' "
     "EXCEPT SELECT city FROM student WHERE major = 'Physics'"),
    ("school", "For each course title with at least two students, how many students are enrolled?",
     "SELECT T2.title, count(*) FROM enrollment AS T1 JOIN course AS T2 ON T1.course_id = T2.course_id "
     "GROUP BY T1.course_id HAVING count(*) >= 2"),
    ("school", "Which students are older than every Biology student?",
     "SELECT name FROM student WHERE age > (SELECT max(age) FROM student WHERE major = 'Biology')"),
    ("school", "What are the names of students who take a course in the Mathematics department?",
     "SELECT DISTINCT T1.name FROM student AS T1 JOIN enrollment AS T2 ON T1.student_id = T2.student_id "
     "JOIN course AS T3 ON T2.course_id = T3.course_id WHERE T3.department = 'Mathematics'"),
    ("shop", "How many orders are there?", "SELECT count(*) FROM orders"),
    ("shop", "List the product names in the Kitchen category.",
     "SELECT name FROM product WHERE category = 'Kitchen'"),
    ("shop", "What are the three most expensive products?",
     "SELECT name FROM product ORDER BY price DESC LIMIT 3"),
    ("shop", "How many orders did each customer place?",
     "SELECT customer_name, count(*) FROM orders GROUP BY customer_name"),
    ("shop", "What is the total revenue of all orders?",
     "SELECT sum(T1.price * T2.quantity) FROM product AS T1 JOIN orders AS T2 "
     "ON T1.product_id = T2.product_id"),
    ("shop", "Which customers bought both a Kitchen product and an Office product?",
     "SELECT T2.customer_name FROM product AS T1 JOIN orders AS T2 ON T1.product_id = T2.product_id "
     "WHERE T1.category = 'Kitchen' INTERSECT SELECT T2.customer_name FROM product AS T1 JOIN orders AS T2 "
     "ON T1.product_id = T2.product_id WHERE T1.category = 'Office'"),
    ("shop", "Which category has the highest total quantity ordered, and what is that quantity?",
     "SELECT T1.category, sum(T2.quantity) FROM product AS T1 JOIN orders AS T2 "
     "ON T1.product_id = T2.product_id GROUP BY T1.category ORDER BY sum(T2.quantity) DESC LIMIT 1"),
    ("missing_db", "How many airlines are there?", "SELECT count(*) FROM airline"),
    ("missing_db", "What are the names of all airlines?", "SELECT name FROM airline"),
]


def build_tiny_spider(root: Path) -> Path:
    """Write the tiny Spider release into root (created if needed) and return root."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tables = [_tables_json_entry(db_id, tables) for db_id, tables in DATABASES.items()]
    _write_json(root / "tables.json", tables)
    for db_id, rows in ROWS.items():
        _write_database(root / "database" / db_id / f"{db_id}.sqlite", DATABASES[db_id], rows)
    (root / "database" / "missing_db").mkdir(parents=True, exist_ok=True)  # like wta_1: no .sqlite

    _write_json(root / "train_spider.json", [_question(*q) for q in TRAIN])
    _write_json(root / "dev.json", [_question(*q) for q in DEV])
    for name, questions in (("train_gold.sql", TRAIN), ("dev_gold.sql", DEV)):
        lines = "".join(f"{query}\t{db_id}\n" for db_id, _, query in questions)
        (root / name).write_text(lines, encoding="utf-8", newline="\n")
    return root


def zip_tiny_spider(root: Path, zip_path: Path, top: str = "spider_data") -> Path:
    """Zip the release at root, its files inside folder `top` ("" for none), like the real zip."""
    root, zip_path = Path(root), Path(zip_path)
    prefix = f"{top}/" if top else ""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        if prefix:
            zf.writestr(zipfile.ZipInfo(prefix), "")
        for path in sorted(root.rglob("*")):
            name = prefix + path.relative_to(root).as_posix()
            if path.is_dir():
                zf.writestr(zipfile.ZipInfo(name + "/"), "")
            else:
                zf.write(path, name)
    return zip_path


def _question(db_id: str, question: str, query: str) -> dict:
    return {"db_id": db_id, "question": question, "query": query}


def _tables_json_entry(db_id: str, tables: list) -> dict:
    columns = [[-1, "*"]]
    types = ["text"]
    index: dict[tuple[str, str], int] = {}
    for t, (table, cols, _, _) in enumerate(tables):
        for name, _, spider_type in cols:
            index[table, name] = len(columns)
            columns.append([t, name])
            types.append(spider_type)
    primary_keys: list = []
    foreign_keys = []
    for table, _, keys, fks in tables:
        ids = [index[table, k] for k in keys]
        if (db_id, table) in COMPOSITE_KEY_AS_LIST:
            primary_keys.append(ids)
        else:
            primary_keys.extend(ids)
        foreign_keys += [[index[table, col], index[ref_table, ref_col]] for col, ref_table, ref_col in fks]
    return {
        "db_id": db_id,
        "table_names_original": [t[0] for t in tables],
        "table_names": [t[0].replace("_", " ") for t in tables],
        "column_names_original": columns,
        "column_names": [[t, name.replace("_", " ").lower()] for t, name in columns],
        "column_types": types,
        "primary_keys": primary_keys,
        "foreign_keys": foreign_keys,
    }


def _write_database(path: Path, tables: list, rows: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    connection = sqlite3.connect(path)
    try:
        for table, cols, keys, fks in tables:
            parts = [f"{name} {sql_type}" for name, sql_type, _ in cols]
            parts.append(f"PRIMARY KEY ({', '.join(keys)})")
            parts += [f"FOREIGN KEY ({col}) REFERENCES {ref}({ref_col})" for col, ref, ref_col in fks]
            connection.execute(f"CREATE TABLE {table} ({', '.join(parts)})")
            marks = ", ".join("?" * len(cols))
            connection.executemany(f"INSERT INTO {table} VALUES ({marks})", rows[table])
        connection.commit()
    finally:
        connection.close()


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
