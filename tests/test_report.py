"""stages/report.py and sqlora.eval.report: the page's content, read as HTML (the browser test
drives its filters: test_report_browser.py)."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_fixtures import QUESTIONS, TEXTS, build_run, run_report

from sqlora.eval.report import error_kind, outcome


class Page(HTMLParser):
    """The rows (data-question), table cells, links and scripts of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.questions: list[dict[str, str]] = []
        self.urls: list[str] = []
        self.tags: set[str] = set()
        self.cells: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._data_script = False
        self.data: dict = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "section" and "data-question" in attrs:
            self.questions.append(attrs)
        for name in ("src", "href"):
            if attrs.get(name):
                self.urls.append(attrs[name])
        if tag == "table" and attrs.get("id"):
            self._table = attrs["id"]
            self.cells[self._table] = []
        if tag == "tr" and self._table:
            self.cells[self._table].append([])
        if tag in ("td", "th") and self._table:
            self._cell = []
        self._data_script = tag == "script" and attrs.get("id") == "report-data"

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._data_script:
            self.data = json.loads(data)
            self._data_script = False


@pytest.fixture(scope="module")
def run(tmp_path_factory, run_script) -> dict[str, Path]:
    paths = build_run(tmp_path_factory.mktemp("report"), run_script)
    details = paths["folder"] / "train_details.json"
    details.write_text(json.dumps({"epochs": 6, "learning_rate": 0.001, "compute_dtype": "bfloat16"}))
    done = run_report(paths, run_script, "--details", details)
    assert done.returncode == 0, done.stderr
    paths["page"] = paths["folder"] / "outputs" / "report" / "index.html"
    paths["run_script"] = run_script
    return paths


def test_every_question_is_a_row_with_its_sql_verdicts_and_notes(run):
    text = run["page"].read_text(encoding="utf-8")
    page = Page(text)
    assert [q["data-question"] for q in page.questions] == [str(i) for i in range(len(QUESTIONS))]
    assert [q["data-hardness"] for q in page.questions] == ["easy", "medium", "hard", "extra", "easy", "easy",
                                                           "medium"]
    # strict and plug-value verdicts of base, then fine-tuned; the fine-tuned error's kind in each mode
    assert page.questions[4]["data-verdicts"] == "1,1,0,1" and page.questions[4]["data-kinds"] == "result,"
    assert page.questions[2]["data-kinds"] == "name,name"
    for question_text in TEXTS:
        assert html.escape(question_text) in text
    assert "SELECT count(*) FROM singers" in text and "no such table: singers" in text
    assert "candidate 2 of 2" in text and "repaired" in text


def test_the_accuracy_table_and_the_changes_by_hardness(run):
    page = Page(run["page"].read_text(encoding="utf-8"))
    accuracy = page.cells["accuracy"]
    assert accuracy[0] == ["execution accuracy", "easy (3)", "medium (2)", "hard (1)", "extra (1)", "all (7)"]
    rows = {row[0]: row[1:] for row in accuracy[1:]}
    assert rows["base, strict"] == ["0.333", "1.000", "0.000", "0.000", "0.429"]
    assert rows["fine-tuned, strict"] == ["0.667", "0.500", "0.000", "1.000", "0.571"]
    assert rows["fine-tuned, plug-value"][-1] == "0.714"  # question 4: 'FRANCE' right with the gold's value
    outcomes = {row[0]: row[1:] for row in page.cells["outcomes"][1:]}
    assert outcomes["fixed"] == ["2", "0", "0", "1", "3"] and outcomes["broken"] == ["1", "1", "0", "0", "2"]


def test_the_page_is_self_contained_with_parameters_and_results(run):
    text = run["page"].read_text(encoding="utf-8")
    page = Page(text)
    # no stylesheet, image or script from elsewhere: the one link is the compare page beside it
    assert page.urls == ["../compare/index.html"]
    assert "link" not in page.tags and "img" not in page.tags and "iframe" not in page.tags
    assert not re.search(r"https?://", text.replace("http://www.w3.org", ""))
    assert "<dt>lora.r</dt><dd>64</dd>" in text
    assert "<dt>train.epochs</dt><dd>auto (6)</dd>" in text  # what auto resolved to, from --details
    previews = page.data["previews"]
    assert previews["0"]["gold"] == {"rows": [["6"]], "more": False}
    assert previews["0"]["before"] == {"error": "execution error: no such table: singers"}  # not run again
    assert previews["5"]["before"] == {"error": "timeout"}  # timed out when judged: not run again
    assert previews["1"]["gold"]["more"] is True and len(previews["1"]["gold"]["rows"]) == 5  # 6 singers


def test_missing_inputs_end_in_one_error_line(run, tmp_path):
    paths = dict(run, finetuned=tmp_path / "nowhere")
    done = run_report(paths, run["run_script"])
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "generations of finetuned not found" in done.stderr


@pytest.mark.parametrize(("error", "kind"), [
    (None, None),
    ("execution error: no such table: singers", "name"),
    ("execution error: no such column: T2.name", "name"),
    ('syntax error: near "SELEC": syntax error', "syntax"),
    ("timeout", "timeout"),
    ("wrong result", "result"),
    ("wrong result (1 column, gold has 2)", "result"),
    ("too many rows (gold has 3)", "result"),
    ("empty prediction", "other"),
    ("refused: write statement", "other"),
])
def test_error_kinds(error, kind):
    assert error_kind(error) == kind


def test_outcomes():
    assert [outcome(b, a) for b, a in ((1, 0), (0, 1), (1, 1), (0, 0))] == ["broken", "fixed", "both-right",
                                                                          "both-wrong"]


def test_results_show_the_rows_the_verdict_compared(run):
    """Spider's metric drops DISTINCT from both queries: the page runs them the same way, and says so."""
    from sqlora.eval.report import DISTINCT_DROPPED, distinct_dropped, read_jsonl, run_preview
    from sqlora.sql.sandbox import DatabaseCache

    database = run["db"] / "concert" / "concert.sqlite"
    sql = "SELECT DISTINCT country FROM singer ORDER BY country"
    with DatabaseCache() as databases:
        as_compared = run_preview(databases, database, sql, drop_distinct=True)
        as_written = run_preview(databases, database, sql)
    assert len(as_compared.rows) == 5 and as_compared.more  # one row per singer: 6
    assert len(set(as_written.rows)) == len(as_written.rows) < 5
    assert Page(run["page"].read_text(encoding="utf-8")).data["previewNote"] == DISTINCT_DROPPED
    # BIRD's metric compares the results as written: no plug-value verdicts, nothing dropped
    assert not distinct_dropped([{"index": 0, "finetuned_exec": 1, "finetuned_exec_error": None}], False)
    spider = read_jsonl(run["per_question"].read_text(encoding="utf-8"))
    assert distinct_dropped(spider, keep_distinct=False)
    assert not distinct_dropped(spider, keep_distinct=True)  # eval.keep_distinct: Spider's metric keeps it
