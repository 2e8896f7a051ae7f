"""benchmarks/bench_predict.py on a CPU: every variant runs, the table compares their answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from sqlora.data.prompts import dev_record
from sqlora.data.schema import load_schemas, serialize_schema
from sqlora.data.spider import load_examples

ROOT = Path(__file__).resolve().parents[1]


def test_every_variant_runs_on_a_cpu_and_gives_the_first_ones_answers(tiny_models, tiny_spider, tmp_path,
                                                                     run_script):
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["quant"]["bits"] = 16
    params["predict"].update(num_candidates=2, max_new_tokens=4, batch_size=4)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    shutil.copytree(tiny_models["llama"], tmp_path / "outputs" / "base_model")
    schemas = load_schemas(tiny_spider / "tables.json")
    examples = [e for e in load_examples(tiny_spider / "dev.json") if e["db_id"] != "missing_db"]
    records = [dev_record(i, e, serialize_schema(schemas[e["db_id"]], "compact")) for i, e in enumerate(examples)]
    prepared = tmp_path / "data" / "prepared"
    prepared.mkdir(parents=True)
    (prepared / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (prepared / "dev_gold.sql").write_text("".join(f"{r['gold']}\t{r['db_id']}\n" for r in records),
                                           encoding="utf-8")
    done = run_script("benchmarks/bench_predict.py", "--model", "base", "--cap-gb", "5.5",
                      "--variant", "halving,planned-shared-cache,planned,planned-chunked", "--prefill-chunk", "16",
                      "--db", tiny_spider / "database", "--json", "rows.json", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(records) > 8
    assert "no CUDA GPU" in done.stdout and "8 questions on CPU, cap none" in done.stdout  # the first 8 only
    rows = json.loads((tmp_path / "rows.json").read_text(encoding="utf-8"))
    assert [row["variant"] for row in rows] == ["halving", "planned-shared-cache", "planned", "planned-chunked"]
    for row in rows:
        assert row["questions"] == 8 and row["out_of_memory"] == 0 and row["peak_mb"] is None
        assert row["batches"] == 4  # 4 sequences of 2 candidates: 2 prompts a batch
        assert row["sql_changed"] == 0 and row["generate_s"] > 0 and 0 <= row["exec_all"] <= 1
    assert "| base | dequantized | planned-chunked |" in done.stdout
