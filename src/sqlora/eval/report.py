"""Question-by-question pages: one self-contained HTML file (inline CSS and JavaScript, no
network) that shows, for every question, the gold SQL and two answers side by side with their
verdicts, and filters them.

The two answers are "before" and "after": the base and the fine-tuned model of one run (the
report stage), or one model of two runs (`sqlora compare`). Both pages are built by
``render_page`` from ``Question`` records:

    answers = {name: answers_of(per_question, generations[name], name) for name in names}
    questions = join_questions(facts_of(per_question, gold, generations[after]), answers[before], answers[after])
    html = render_page("Report", questions, labels=("base", "fine-tuned"), ...)

Each question is a ``<section class="q" data-question="INDEX">``; its verdicts and error kinds
ride on data attributes that the page's script filters by. The first rows of each query's result
(``preview_results``) are stored as JSON in the page and drawn only when a question's "results"
is opened, which keeps the page light for a thousand questions.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.progress import progress
from ..sql.sandbox import DatabaseCache, database_files, is_compile_error
from .accuracy import ALL_LEVELS, LEVELS, as_executed, prepare_sql

MODES = ("exec", "plug")  # per_question.jsonl's {name}_{mode}: strict, then plug-value
MODE_TITLES = {"exec": "strict", "plug": "plug-value"}
# error kinds a filter offers, in order; error_kind gives each error one of them
ERROR_KINDS = {"name": "no such table or column", "syntax": "syntax", "timeout": "timeout",
               "result": "wrong result", "other": "other"}
OUTCOMES = {"broken": "broken", "fixed": "fixed", "both-wrong": "both wrong", "both-right": "both right"}
PREVIEW_ROWS = 5
PREVIEW_TIMEOUT = 1.0      # seconds per query: a preview, not a verdict
PREVIEW_CELL_CHARS = 60
MODEL_TITLES = {"finetuned": "fine-tuned"}
SKIPPED = "database missing"  # evaluate's error for a question it leaves out of the scores


def title_of(name: str) -> str:
    return MODEL_TITLES.get(name, name)


def error_kind(error: str | None) -> str | None:
    """The filter an error falls under (a key of ERROR_KINDS); None when the answer is right."""
    if error is None:
        return None
    low = error.lower()
    if "no such table" in low or "no such column" in low:
        return "name"
    if low.startswith("syntax error"):
        return "syntax"
    if low == "timeout":
        return "timeout"
    if low.startswith(("wrong result", "too many rows")):
        return "result"
    return "other"


def outcome(before: int, after: int) -> str:
    """broken (right before, wrong after), fixed (the reverse), both-right or both-wrong."""
    if before:
        return "both-right" if after else "broken"
    return "fixed" if after else "both-wrong"


@dataclass(frozen=True)
class Answer:
    """One model's answer to one question: its SQL, verdict and error in each mode."""

    sql: str
    verdicts: tuple[int, int]              # strict, plug-value (1: right)
    errors: tuple[str | None, str | None]
    note: str = ""                         # which candidate was kept, and whether it was repaired

    def right(self, mode: str = "exec") -> int:
        return self.verdicts[MODES.index(mode)]


@dataclass(frozen=True)
class Question:
    index: int
    db_id: str
    hardness: str
    text: str
    gold: str
    before: Answer
    after: Answer

    @property
    def scored(self) -> bool:
        """False for a question evaluate left out (its database missing)."""
        return not (self.after.errors[0] or "").startswith(SKIPPED)


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_gold(text: str) -> list[tuple[str, str]]:
    """(SQL, db_id) of each line of a gold file (SQL<TAB>db_id)."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [(sql.strip(), db_id.strip()) for sql, _, db_id in (line.rpartition("\t") for line in lines)]


def distinct_dropped(per_question: Sequence[dict], keep_distinct: bool) -> bool:
    """Whether the evaluator compared these results without DISTINCT: Spider's metric (it gives a
    plug-value verdict; BIRD's gives none) drops it from both queries unless eval.keep_distinct."""
    return not keep_distinct and any(key.endswith("_plug") for row in per_question[:1] for key in row)


def model_names(per_question: Sequence[dict]) -> list[str]:
    """The models a per_question.jsonl judged, in its order (keys {name}_exec)."""
    if not per_question:
        return []
    return [key[: -len("_exec")] for key in per_question[0] if key.endswith("_exec")]


def candidate_note(record: dict) -> str:
    """What a generations.jsonl record says about the SQL kept: "candidate 2 of 4, repaired"."""
    parts = []
    candidates = record.get("candidates")
    if candidates and len(candidates) > 1 and record.get("candidate"):
        parts.append(f"candidate {record['candidate'] + 1} of {len(candidates)}")
    if record.get("repaired"):
        parts.append("repaired")
    return ", ".join(parts)


def answers_of(per_question: Sequence[dict], generations: Sequence[dict] | None, name: str) -> dict[int, Answer]:
    """Each question's answer from model `name`: verdicts from per_question.jsonl, SQL and notes
    from that model's generations.jsonl (None: SQL unknown)."""
    records = {record["index"]: record for record in generations or ()}
    answers = {}
    for row in per_question:
        if f"{name}_exec" not in row:
            raise ValueError(f"per-question results have no model named {name!r} "
                             f"(they have {', '.join(model_names(per_question)) or 'none'})")
        record = records.get(row["index"], {})
        answers[row["index"]] = Answer(
            sql=record.get("sql", ""),
            # BIRD's metric has no plug-value: its strict verdict stands for both
            verdicts=tuple(int(row.get(f"{name}_{mode}", row[f"{name}_exec"])) for mode in MODES),
            errors=tuple(row.get(f"{name}_{mode}_error", row.get(f"{name}_exec_error")) for mode in MODES),
            note=candidate_note(record))
    return answers


@dataclass(frozen=True)
class Facts:
    db_id: str
    hardness: str
    text: str
    gold: str


def facts_of(per_question: Sequence[dict], gold: Sequence[tuple[str, str]],
             generations: Sequence[dict] | None) -> dict[int, Facts]:
    """What a question is: database and hardness (per_question.jsonl), gold SQL (the gold file's
    line `index`) and its words (generations.jsonl)."""
    texts = {record["index"]: record.get("question", "") for record in generations or ()}
    facts = {}
    for row in per_question:
        index = row["index"]
        gold_sql = gold[index][0] if index < len(gold) else ""
        facts[index] = Facts(row["db_id"], row["hardness"], texts.get(index, ""), gold_sql)
    return facts


def join_questions(facts: dict[int, Facts], before: dict[int, Answer], after: dict[int, Answer]) -> list[Question]:
    """Questions that both answers cover, in index order."""
    return [Question(index, f.db_id, f.hardness, f.text, f.gold, before[index], after[index])
            for index, f in sorted(facts.items()) if index in before and index in after]


def accuracy(questions: Iterable[Question], side: str, mode: str) -> dict[str, tuple[int, int]]:
    """(right, scored) by hardness level and over all, for side "before" or "after"."""
    counts = {level: [0, 0] for level in ALL_LEVELS}
    for question in questions:
        if not question.scored:
            continue
        right = getattr(question, side).right(mode)
        for level in (question.hardness, "all"):
            if level in counts:
                counts[level][0] += right
                counts[level][1] += 1
    return {level: (right, total) for level, (right, total) in counts.items()}


def outcomes(questions: Iterable[Question], mode: str = "exec") -> dict[str, Counter]:
    """How many questions were broken, fixed, both right and both wrong, by hardness and over all."""
    table = {level: Counter() for level in ALL_LEVELS}
    for question in questions:
        if not question.scored:
            continue
        kind = outcome(question.before.right(mode), question.after.right(mode))
        for level in (question.hardness, "all"):
            if level in table:
                table[level][kind] += 1
    return table


def broken_first(questions: Iterable[Question], mode: str = "exec") -> list[Question]:
    """Broken questions first, then fixed, both wrong and both right; by index within each."""
    order = list(OUTCOMES)
    return sorted(questions, key=lambda q: (order.index(outcome(q.before.right(mode), q.after.right(mode))),
                                            q.index))


# ----------------------------------------------------------------------------- result previews

@dataclass(frozen=True)
class Preview:
    """The first rows of a query's result, or why there are none."""

    rows: tuple[tuple[str, ...], ...] = ()
    more: bool = False
    error: str | None = None

    def as_json(self) -> dict:
        if self.error is not None:
            return {"error": self.error}
        return {"rows": [list(row) for row in self.rows], "more": self.more}


def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = str(value)
    return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"


def run_preview(databases: DatabaseCache, path: Path, sql: str, written_error: str | None = None,
                drop_distinct: bool = False) -> Preview:
    """Run sql for a preview; an answer whose error comes from its text, or that ran out of time
    when it was judged, is not run again. `drop_distinct`: run it without DISTINCT, as Spider's
    metric compares results, so that the rows shown are the rows the verdict compared."""
    if not sql.strip():
        return Preview(error="no SQL")
    if written_error is not None and (is_compile_error(written_error) or written_error == "timeout" or
                                      written_error.startswith(("empty prediction", "refused", SKIPPED))):
        return Preview(error=written_error)
    if drop_distinct:
        sql = prepare_sql(sql, keep_distinct=False)
    outcome_ = databases.get(path).run(as_executed(sql), timeout=PREVIEW_TIMEOUT, max_rows=PREVIEW_ROWS,
                                       truncate=True)
    if not outcome_.ok:
        return Preview(error=outcome_.error)
    return Preview(rows=tuple(tuple(_cell(value) for value in row) for row in outcome_.rows or ()),
                   more=outcome_.truncated)


def preview_results(questions: Sequence[Question], db_dir: str | Path, drop_distinct: bool = False) -> dict[int, dict]:
    """{index: {"gold", "before", "after": preview}} from each question's main database, read-only
    and with a short timeout; questions whose database is missing get none. `drop_distinct`: as
    `run_preview`, for results scored by Spider's metric."""
    previews = {}
    with DatabaseCache() as databases, progress(total=len(questions), desc="results", unit="q") as bar:
        for question in questions:
            files = database_files(db_dir, question.db_id)
            if files:
                previews[question.index] = {
                    "gold": run_preview(databases, files[0], question.gold,
                                        drop_distinct=drop_distinct).as_json(),
                    "before": run_preview(databases, files[0], question.before.sql, question.before.errors[0],
                                          drop_distinct=drop_distinct).as_json(),
                    "after": run_preview(databases, files[0], question.after.sql, question.after.errors[0],
                                         drop_distinct=drop_distinct).as_json()}
            bar.update(1)
    return previews


# ----------------------------------------------------------------------------- the page

DISTINCT_DROPPED = ("Run without DISTINCT, as Spider's metric compares the results (the reference evaluator "
                    "drops it from both queries).")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def accuracy_table(questions: Sequence[Question], labels: tuple[str, str]) -> str:
    """Execution accuracy by hardness: before and after, strict and plug-value."""
    totals = accuracy(questions, "after", "exec")
    head = "".join(f"<th>{level} ({totals[level][1]})</th>" for level in ALL_LEVELS)
    body = []
    for side, label in zip(("before", "after"), labels):
        for mode in MODES:
            cells = accuracy(questions, side, mode)
            row_class = ' class="main"' if side == "after" and mode == "exec" else ""
            values = "".join(f"<td>{right / total:.3f}</td>" if total else "<td>-</td>"
                             for right, total in (cells[level] for level in ALL_LEVELS))
            body.append(f"<tr{row_class}><th>{_e(label)}, {MODE_TITLES[mode]}</th>{values}</tr>")
    return (f'<table class="scores" id="accuracy"><thead><tr><th>execution accuracy</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def outcome_table(questions: Sequence[Question], labels: tuple[str, str]) -> str:
    """Broken, fixed, both right and both wrong (strict), by hardness."""
    table = outcomes(questions)
    head = "".join(f"<th>{level}</th>" for level in ALL_LEVELS)
    meanings = {"broken": f"{labels[0]} right, {labels[1]} wrong", "fixed": f"{labels[0]} wrong, {labels[1]} right",
                "both-wrong": "", "both-right": ""}
    body = "".join(
        f'<tr><th title="{_e(meanings[kind])}">{title}</th>'
        + "".join(f"<td>{table[level][kind]}</td>" for level in ALL_LEVELS) + "</tr>"
        for kind, title in OUTCOMES.items())
    return (f'<table class="scores" id="outcomes"><thead><tr><th>{_e(labels[0])} → {_e(labels[1])} (strict)</th>'
            f"{head}</tr></thead><tbody>{body}</tbody></table>")


def _verdict_badges(answer: Answer) -> str:
    return "".join(
        f'<span class="v {"ok" if right else "no"}">{MODE_TITLES[mode]} {"✓" if right else "✗"}</span>'
        for mode, right in zip(MODES, answer.verdicts))


def _answer_html(label: str, answer: Answer) -> str:
    error = answer.errors[0]
    note = f'<p class="note">{_e(answer.note)}</p>' if answer.note else ""
    error_html = f'<p class="err">{_e(error)}</p>' if error else ""
    sql = _e(answer.sql) if answer.sql else '<span class="none">(no SQL)</span>'
    return (f'<div class="a"><h4>{_e(label)} {_verdict_badges(answer)}</h4><pre>{sql}</pre>'
            f"{note}{error_html}</div>")


def question_html(question: Question, labels: tuple[str, str]) -> str:
    verdicts = ",".join(str(v) for v in (*question.before.verdicts, *question.after.verdicts))
    kinds = ",".join(error_kind(error) or "" for error in question.after.errors)
    return (
        f'<section class="q" data-question="{question.index}" data-hardness="{_e(question.hardness)}" '
        f'data-verdicts="{verdicts}" data-kinds="{kinds}">'
        f'<header><span class="idx">#{question.index}</span> <span class="lvl {_e(question.hardness)}">'
        f'{_e(question.hardness)}</span> <span class="db">{_e(question.db_id)}</span> '
        f'<span class="text">{_e(question.text)}</span></header>'
        f'<div class="answers"><div class="a gold"><h4>gold</h4><pre>{_e(question.gold)}</pre></div>'
        f"{_answer_html(labels[0], question.before)}{_answer_html(labels[1], question.after)}</div>"
        f'<details class="results" data-question="{question.index}"><summary>results</summary></details>'
        "</section>")


def _buttons(group: str, options: dict[str, str]) -> str:
    return "".join(f'<button type="button" data-group="{group}" data-value="{value}">{_e(title)} '
                   f'<span class="n"></span></button>' for value, title in options.items())


def filters_html(labels: tuple[str, str]) -> str:
    before, after = labels
    groups = [
        ("mode", "verdicts", {"exec": "strict", "plug": "plug-value"}, False),
        ("hardness", "hardness", {"all": "all", **{level: level for level in LEVELS}}, True),
        ("after", after, {"all": "all", "right": "right", "wrong": "wrong"}, True),
        ("change", f"{before} → {after}", {"all": "all", **OUTCOMES}, True),
        ("kind", f"{after}'s error", {"all": "all", **ERROR_KINDS}, True),
    ]
    rows = []
    for group, title, options, counted in groups:
        buttons = _buttons(group, options)
        if not counted:
            buttons = buttons.replace(' <span class="n"></span>', "")
        rows.append(f'<div class="filter" data-filter="{group}"><span class="label">{_e(title)}</span>{buttons}</div>')
    rows.append('<div class="filter"><span class="label">search</span>'
                '<input id="search" type="search" placeholder="words of a question, a database, SQL"></div>')
    return (f'<div id="filters">{"".join(rows)}<p id="status">showing <b id="shown"></b> of '
            f'<b id="total"></b> questions</p></div>')


def _script_json(data) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


def render_page(title: str, questions: Sequence[Question], *, labels: tuple[str, str], intro: str = "",
                previews: dict[int, dict] | None = None, summary_tables: bool = True,
                distinct_dropped: bool = False) -> str:
    """The whole page. intro: HTML put under the title (the run's parameters, links);
    distinct_dropped: the previews ran without DISTINCT (`preview_results`), said under each."""
    tables = accuracy_table(questions, labels) + (outcome_table(questions, labels) if summary_tables else "")
    data = {"labels": list(labels), "previews": {str(k): v for k, v in (previews or {}).items()},
            "previewNote": DISTINCT_DROPPED if distinct_dropped else ""}
    rows = "".join(question_html(question, labels) for question in questions)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>{intro}<div class=\"tables\">{tables}</div>{filters_html(labels)}"
        f'<main id="questions">{rows}</main>'
        f'<script type="application/json" id="report-data">{_script_json(data)}</script>'
        f"<script>{SCRIPT}</script></body></html>\n")


def parameters_html(pairs: Sequence[tuple[str, str]]) -> str:
    items = "".join(f"<div><dt>{_e(key)}</dt><dd>{_e(value)}</dd></div>" for key, value in pairs)
    return f'<dl class="params">{items}</dl>'


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em auto;max-width:1500px;padding:0 1em;color:#222}
h1{font-size:1.4em;margin:.2em 0}h4{margin:0 0 .3em;font-size:.95em}
.intro{color:#444}.intro code{background:#f3f3f3;padding:0 .25em}
dl.params{display:flex;flex-wrap:wrap;gap:.2em 1.2em;margin:.6em 0}dl.params div{display:flex;gap:.3em}
dl.params dt{color:#666}dl.params dd{margin:0;font-family:monospace}
.tables{display:flex;flex-wrap:wrap;gap:1.5em;margin:.8em 0}
table.scores{border-collapse:collapse}table.scores th,table.scores td{padding:.15em .6em;text-align:right;
border-bottom:1px solid #ddd}table.scores th:first-child{text-align:left}table.scores tr.main{font-weight:bold}
#filters{position:sticky;top:0;background:#fff;border-bottom:2px solid #ccc;padding:.4em 0;z-index:1}
.filter{display:flex;flex-wrap:wrap;align-items:center;gap:.3em;margin:.15em 0}
.filter .label{width:13em;color:#555}
.filter button{border:1px solid #bbb;background:#f7f7f7;border-radius:3px;padding:.1em .5em;cursor:pointer}
.filter button.on{background:#2b6cb0;border-color:#2b6cb0;color:#fff}.filter button .n{opacity:.75}
#search{width:28em;padding:.2em}#status{margin:.3em 0 0}
section.q{border-bottom:1px solid #ddd;padding:.5em 0}
section.q header{margin-bottom:.3em}.idx{color:#888}.db{font-family:monospace;color:#555}.text{font-weight:600}
.lvl{border-radius:3px;padding:0 .35em;font-size:.85em;color:#fff}
.lvl.easy{background:#38a169}.lvl.medium{background:#d69e2e}.lvl.hard{background:#dd6b20}.lvl.extra{background:#c53030}
.answers{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:.6em}
.a pre{white-space:pre-wrap;word-break:break-word;background:#f6f8fa;margin:0;padding:.3em;font-size:.9em}
.a.gold pre{background:#eef6ee}
.v{font-size:.8em;border-radius:3px;padding:0 .3em;margin-left:.3em;font-weight:normal}
.v.ok{background:#c6f6d5;color:#22543d}.v.no{background:#fed7d7;color:#742a2a}
.note{margin:.2em 0;color:#6b46c1;font-size:.85em}.err{margin:.2em 0;color:#9b2c2c;font-size:.85em}
.none{color:#999}
details.results summary{cursor:pointer;color:#2b6cb0;font-size:.9em;margin-top:.3em}
.previews{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:.6em;margin-top:.3em}
.previews table{border-collapse:collapse;font-size:.85em;font-family:monospace}
.preview-note{margin:.2em 0 0;font-size:.85em;color:#666}
.previews td{border:1px solid #ddd;padding:0 .3em;vertical-align:top}.previews p{margin:0;font-size:.85em;color:#666}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var rows = Array.prototype.slice.call(document.querySelectorAll("section.q"));
  var questions = rows.map(function (row) {
    return {row: row, hardness: row.dataset.hardness,
            verdicts: row.dataset.verdicts.split(",").map(Number),
            kinds: row.dataset.kinds.split(","), text: row.textContent.toLowerCase()};
  });
  var state = {mode: "exec", hardness: "all", after: "all", change: "all", kind: "all", search: ""};
  function m() { return state.mode === "exec" ? 0 : 1; }
  function outcome(before, after) {
    return before ? (after ? "both-right" : "broken") : (after ? "fixed" : "both-wrong");
  }
  var tests = {
    hardness: function (q, v) { return v === "all" || q.hardness === v; },
    after: function (q, v) { return v === "all" || (q.verdicts[2 + m()] === 1) === (v === "right"); },
    change: function (q, v) { return v === "all" || outcome(q.verdicts[m()], q.verdicts[2 + m()]) === v; },
    kind: function (q, v) { return v === "all" || q.kinds[m()] === v; },
    search: function (q, v) { return !v || q.text.indexOf(v) >= 0; }
  };
  var groups = Object.keys(tests);
  function matches(q, except) {
    for (var i = 0; i < groups.length; i++) {
      if (groups[i] !== except && !tests[groups[i]](q, state[groups[i]])) { return false; }
    }
    return true;
  }
  function update() {
    var shown = 0;
    questions.forEach(function (q) { var ok = matches(q, null); q.row.hidden = !ok; if (ok) { shown++; } });
    document.getElementById("shown").textContent = shown;
    document.getElementById("total").textContent = questions.length;
    document.querySelectorAll("button[data-group]").forEach(function (button) {
      var group = button.dataset.group, value = button.dataset.value;
      button.classList.toggle("on", state[group] === value);
      var count = button.querySelector(".n");
      if (!count) { return; }
      var n = 0;
      questions.forEach(function (q) { if (tests[group](q, value) && matches(q, group)) { n++; } });
      count.textContent = n;
    });
  }
  document.getElementById("filters").addEventListener("click", function (event) {
    var button = event.target.closest("button[data-group]");
    if (!button) { return; }
    state[button.dataset.group] = button.dataset.value;
    update();
  });
  document.getElementById("search").addEventListener("input", function (event) {
    state.search = event.target.value.trim().toLowerCase();
    update();
  });
  function previewHtml(title, preview) {
    var box = document.createElement("div");
    var heading = document.createElement("h4");
    heading.textContent = title;
    box.appendChild(heading);
    var note = document.createElement("p");
    if (!preview) {
      note.textContent = "not run";
    } else if (preview.error) {
      note.textContent = preview.error;
    } else if (!preview.rows.length) {
      note.textContent = "no rows";
    } else {
      var table = document.createElement("table");
      preview.rows.forEach(function (values) {
        var tr = table.insertRow();
        values.forEach(function (value) { tr.insertCell().textContent = value; });
      });
      box.appendChild(table);
      note.textContent = preview.more ? "first " + preview.rows.length + " rows" :
        preview.rows.length + (preview.rows.length === 1 ? " row" : " rows");
    }
    box.appendChild(note);
    return box;
  }
  document.addEventListener("toggle", function (event) {
    var details = event.target;
    if (!details.matches || !details.matches("details.results") || !details.open ||
        details.querySelector(".previews")) { return; }
    var preview = data.previews[details.dataset.question];
    var grid = document.createElement("div");
    grid.className = "previews";
    if (!preview) {
      grid.textContent = "No results were recorded for this question.";
    } else {
      grid.appendChild(previewHtml("gold", preview.gold));
      grid.appendChild(previewHtml(data.labels[0], preview.before));
      grid.appendChild(previewHtml(data.labels[1], preview.after));
    }
    details.appendChild(grid);
    if (preview && data.previewNote) {
      var caption = document.createElement("p");
      caption.className = "preview-note";
      caption.textContent = data.previewNote;
      details.appendChild(caption);
    }
  }, true);
  update();
}());
"""
