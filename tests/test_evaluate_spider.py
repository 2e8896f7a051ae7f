"""The real Spider dev set (skipped unless $SQLORA_SPIDER_ZIP names spider_data.zip)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from eval_fixtures import spider_zip_path

from sqlora.eval.accuracy import evaluate
from sqlora.sql.tokens import tokenize


@pytest.fixture(scope="module")
def spider_dev(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """(dev_gold.sql, database folder, gold SQL lines) with only the dev databases extracted."""
    spider_zip = spider_zip_path()
    target = tmp_path_factory.mktemp("spider")
    with zipfile.ZipFile(spider_zip) as archive:
        gold_text = archive.read("spider_data/dev_gold.sql").decode("utf-8")
        dev_ids = {line.rsplit("\t", 1)[1] for line in gold_text.splitlines() if line.strip()}
        members = [
            name
            for name in archive.namelist()
            if name.endswith(".sqlite") and name.split("/")[2] in dev_ids
        ]
        archive.extractall(target, members=members)
    gold = target / "dev_gold.sql"
    gold.write_text(gold_text, encoding="utf-8")
    sqls = [line.rsplit("\t", 1)[0] for line in gold_text.splitlines() if line.strip()]
    return gold, target / "spider_data" / "database", sqls


def test_gold_as_prediction_is_all_right(spider_dev, tmp_path):
    gold, db_dir, sqls = spider_dev
    pred = tmp_path / "pred.sql"
    pred.write_text("".join(sql + "\n" for sql in sqls), encoding="utf-8")
    result = evaluate(gold, pred, db_dir, workers=2)
    counts = [result.scores[level]["count"] for level in ("easy", "medium", "hard", "extra", "all")]
    assert counts == [232, 416, 160, 164, 972]
    assert result.scores["all"]["exec"] == 1.0
    skipped = {r["db_id"] for r in result.per_question if r.get("skipped")}
    assert skipped == {"wta_1"}


def test_plug_value_recovers_changed_values(spider_dev, tmp_path):
    gold, db_dir, sqls = spider_dev

    def change_values(sql: str) -> str:
        pieces = []
        for token in tokenize(sql):
            text = token.text
            if token.kind == "number" and text.isdigit():
                text = str(int(text) + 1)
            elif token.kind in ("string", "quoted"):
                text = text[:-1] + "zz" + text[-1]
            pieces.append(text)
        return "".join(pieces)

    pred = tmp_path / "pred.sql"
    pred.write_text("".join(change_values(sql) + "\n" for sql in sqls), encoding="utf-8")
    strict = evaluate(gold, pred, db_dir, workers=2)
    plugged = evaluate(gold, pred, db_dir, workers=2, plug_value=True)
    assert strict.scores["all"]["exec"] < 0.5
    assert plugged.scores["all"]["exec"] == 1.0
