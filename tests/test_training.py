"""LoRA training on tiny 4-bit models: loss on completions only, loss log, divergence guard, resume."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SQLORA_PROGRESS", "0")

import csv  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import trl  # noqa: E402
import yaml  # noqa: E402
from script_modules import load_script  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from sqlora.core.errors import SqloraError  # noqa: E402
from sqlora.core.params import LoraParams, QuantParams, TrainParams, as_dict  # noqa: E402
from sqlora.data.prompts import build_prompt  # noqa: E402
from sqlora.model.loading import load_quantized_model, load_tokenizer, lora_config  # noqa: E402
from sqlora.model.precision import compute_dtype  # noqa: E402
from sqlora.train import callbacks, schedule  # noqa: E402
from sqlora.train import plan as plan_module  # noqa: E402
from sqlora.train.loop import RunFiles, finite_or_none, fitting_rows, train_lora  # noqa: E402
from sqlora.train.plan import BatchPlan, choose_plan, common_plan, fit_micro_batch  # noqa: E402
from sqlora.train.resume import FINGERPRINT_FILE, fingerprint, resumable_checkpoint  # noqa: E402
from sqlora.train.schedule import parameter_count, resolved_schedule  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
QUANT = QuantParams(bits=4)
LORA = LoraParams(r=4, alpha=8, dropout=0.0, target_modules="all-linear")
TRAIN = {"epochs": 1, "max_steps": 6, "batch_size": 2, "gradient_accumulation_steps": 1,
         "learning_rate": 1e-2, "lr_scheduler": "linear", "warmup_steps": 0, "max_length": 128,
         "gradient_checkpointing": False, "dequantize": "auto", "float32_norms": "auto",
         "group_by_length": True, "check_generations": False, "seed": 0, "logging_steps": 1, "save_steps": 2}
SCHEMA = "singer(singer_id number, name text, country text, age number)"


def make_rows(n: int = 16) -> list[dict]:
    """Prompt/completion rows of varied lengths, as preprocess writes them."""
    rows = []
    for i in range(n):
        question = f"Which singers from country {i} are older than {20 + i}?" + " Please." * (i % 5)
        sql = f"SELECT name FROM singer WHERE country = '{i}' AND age > {20 + i}" + " ORDER BY age" * (i % 3)
        rows.append({"prompt": build_prompt(SCHEMA, question),
                     "completion": [{"role": "assistant", "content": sql}]})
    return rows


ROWS = make_rows()


def run_training(model_dir: Path, out: Path, *, run_id: str = "run", rows=ROWS, **overrides) -> dict:
    model = load_quantized_model(model_dir, QUANT, for_training=True)
    tokenizer = load_tokenizer(model_dir)
    train = TrainParams.read({**TRAIN, **overrides})
    train = resolved_schedule(train, parameter_count(model))
    return train_lora(model, tokenizer, rows, train, lora_config(LORA), RunFiles(out / "checkpoints", out / "loss.csv", run_id),
                      compute_dtype(QUANT.bnb_4bit_compute_dtype))


def read_loss_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def checkpoint_steps(checkpoint_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in checkpoint_dir.glob("checkpoint-*"))


class ExtraCallbacks:
    """Adds callbacks to every SFTTrainer that train_lora builds (trl's public callbacks argument),
    and records the batches each step trains on."""

    def __init__(self, monkeypatch, *callbacks):
        self.batches: dict[int, list[list[int]]] = {}
        original, recorder, extra = trl.SFTTrainer, self, list(callbacks)

        class Trainer(original):
            def __init__(self, *args, callbacks=None, **kwargs):
                super().__init__(*args, callbacks=[*(callbacks or []), *extra], **kwargs)

            def training_step(self, model, inputs, *args, **kwargs):
                ids = inputs["input_ids"].tolist()
                mask = inputs["attention_mask"].tolist()
                recorder.batches[self.state.global_step + 1] = [
                    [t for t, m in zip(row, keep) if m] for row, keep in zip(ids, mask)]
                return super().training_step(model, inputs, *args, **kwargs)

        monkeypatch.setattr(trl, "SFTTrainer", Trainer)


class InterruptAfter(TrainerCallback):
    """Ctrl-C right after step `step` was logged (and saved, when it is a save step)."""

    def __init__(self, step: int):
        self.step = step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == self.step and state.global_step % args.save_steps:
            raise KeyboardInterrupt

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


class PoisonAfter(TrainerCallback):
    """Diverged weights: the LoRA weights become NaN after step `step`, so later losses are NaN."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if "lora_" in name:
                        param.fill_(float("nan"))


def test_fingerprint():
    assert fingerprint({"a": 1, "b": 2}, 3) == fingerprint({"b": 2, "a": 1}, 3)
    assert fingerprint({"a": 1}, 3) != fingerprint({"a": 2}, 3)


# ---------------------------------------------------------------- training

@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_train_lora(tiny_models, family, tmp_path):
    result = run_training(tiny_models[family], tmp_path, max_steps=3, logging_steps=1, save_steps=100)
    stats = result.stats
    assert stats["steps"] == 3 and stats["resumed_from_step"] == 0
    assert stats["examples"] == len(ROWS) and stats["skipped_too_long"] == 0
    assert math.isfinite(stats["final_loss"]) and stats["final_loss"] > 0
    assert math.isfinite(stats["mean_loss"])
    assert stats["tokens"] > 0 and stats["trainable_params"] > 0
    # only LoRA weights train: far fewer than the (tiny) model's parameters
    assert stats["trainable_params"] < sum(p.numel() for p in result.trainer.model.parameters())

    rows = read_loss_csv(tmp_path / "loss.csv")
    assert rows[0] == ["step", "loss", "learning_rate"]
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3]
    assert all(math.isfinite(float(r[1])) and float(r[2]) > 0 for r in rows[1:])
    assert float(rows[-1][1]) == pytest.approx(stats["final_loss"], abs=1e-4)

    # the adapter saves and holds LoRA weights only
    adapter = tmp_path / "adapter"
    result.trainer.model.save_pretrained(adapter)
    assert (adapter / "adapter_config.json").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == LORA.r

    # loss only on the completion: every prompt token is -100, every completion token is a label
    trainer = result.trainer
    tokenizer = trainer.processing_class
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    assert len(examples) == len(ROWS)
    for example in examples:
        prompt_text = tokenizer.apply_chat_template(example["prompt"], tokenize=False,
                                                    add_generation_prompt=True)
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        ids, labels = example["input_ids"], example["labels"]
        n = len(prompt_ids)
        assert ids[:n] == prompt_ids
        assert all(label == -100 for label in labels[:n])
        assert labels[n:] == ids[n:] and len(ids) > n
        supervised = tokenizer.decode(labels[n:])
        assert supervised.startswith(example["completion"][0]["content"])
        assert end_id in labels[n:]  # the model learns to end its turn

    # padding in a batch adds no labels, and the end token is still a label where pad == eos
    batch = trainer.data_collator(examples[:4])
    for row, example in enumerate(examples[:4]):
        labels = batch["labels"][row].tolist()
        real = batch["attention_mask"][row].tolist()
        assert [lab for lab, keep in zip(labels, real) if keep] == example["labels"]
        assert all(lab == -100 for lab, keep in zip(labels, real) if not keep)


# ---------------------------------------------------------------- examples too long

def chat_length(tokenizer, row: dict) -> int:
    return len(tokenizer(tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False),
                         add_special_tokens=False)["input_ids"])


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return load_tokenizer(tiny_models["llama"])


def test_fitting_rows_drops_and_counts_the_long_ones(tokenizer):
    long_row = make_rows(1)[0]
    long_row = {**long_row, "prompt": build_prompt(SCHEMA + ", extra text" * 100, "How many singers?")}
    rows = [ROWS[0], long_row, ROWS[1], long_row, ROWS[2]]
    assert chat_length(tokenizer, long_row) > 256 > max(chat_length(tokenizer, r) for r in ROWS[:3])
    kept, skipped = fitting_rows(rows, tokenizer, 256)
    assert kept == [ROWS[0], ROWS[1], ROWS[2]] and skipped == 2  # in their order, untouched


def test_fitting_rows_counts_the_whole_chat(tokenizer):
    """The limit is on prompt + completion with the chat template's tokens, inclusive."""
    row = ROWS[0]
    length = chat_length(tokenizer, row)
    assert length > chat_length(tokenizer, {**row, "completion": []}) + 5  # the completion counts
    assert fitting_rows([row], tokenizer, length) == ([row], 0)
    assert fitting_rows([row], tokenizer, length - 1) == ([], 1)
    assert fitting_rows([], tokenizer, 128) == ([], 0)


def test_training_leaves_out_examples_longer_than_max_length(tiny_models, tmp_path, tokenizer):
    """The kept examples are not truncated: each still ends with the end-of-turn token."""
    lengths = sorted(chat_length(tokenizer, r) for r in ROWS)
    limit = lengths[len(lengths) // 2]
    fitting = sum(1 for n in lengths if n <= limit)
    assert 0 < fitting < len(ROWS)
    result = run_training(tiny_models["llama"], tmp_path, max_steps=1, max_length=limit, save_steps=100)
    stats, trainer = result.stats, result.trainer
    assert stats["examples"] == fitting and stats["skipped_too_long"] == len(ROWS) - fitting
    assert len(trainer.train_dataset) == fitting
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for example in trainer.train_dataset:
        assert len(example["input_ids"]) <= limit
        assert end_id in example["labels"]  # the completion is whole


def test_training_refuses_when_no_example_fits(tiny_models, tmp_path, monkeypatch):
    def no_trainer(*args, **kwargs):
        raise AssertionError("no trainer should be built")

    monkeypatch.setattr(trl, "SFTTrainer", no_trainer)
    with pytest.raises(SqloraError, match="max_length = 16"):
        run_training(tiny_models["llama"], tmp_path, max_length=16)
    assert not (tmp_path / "loss.csv").exists()


# ---------------------------------------------------------------- divergence guard

def test_nan_loss_stops_training_and_names_last_good_checkpoint(tiny_models, tmp_path, monkeypatch):
    """A NaN loss in the last logging window must be caught, not averaged away."""
    ExtraCallbacks(monkeypatch, PoisonAfter(3))
    with pytest.raises(SqloraError) as caught:
        run_training(tiny_models["llama"], tmp_path, max_steps=4, logging_steps=2, save_steps=2)
    message = str(caught.value)
    assert "loss" in message and "nan" in message.lower(), message
    assert "step 4" in message
    assert "last good checkpoint" in message and message.endswith("checkpoint-2")
    assert checkpoint_steps(tmp_path / "checkpoints") == [2]  # nothing saved after the NaN


def test_train_stage_writes_no_adapter_when_the_loss_goes_nan(tiny_models, tmp_path, monkeypatch):
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["quant"] = as_dict(QUANT)
    params["lora"] = as_dict(LORA)
    params["train"] = {**TRAIN, "max_steps": 6, "logging_steps": 1, "save_steps": 2}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    with (tmp_path / "train.jsonl").open("w", encoding="utf-8") as f:
        for row in ROWS:
            f.write(json.dumps(row) + "\n")
    out = tmp_path / "adapter"
    monkeypatch.setattr(sys, "argv", [
        "train.py", "--base", str(tiny_models["llama"]), "--train", str(tmp_path / "train.jsonl"),
        "--out", str(out), "--checkpoints", str(tmp_path / "ckpt"),
        "--metrics", str(tmp_path / "train.json"), "--details", str(tmp_path / "details.json"),
        "--loss-curve", str(tmp_path / "loss.csv"),
        "--params", str(tmp_path / "params.yaml")])
    ExtraCallbacks(monkeypatch, PoisonAfter(3))
    stage = load_script("stages/train.py")
    with pytest.raises(SqloraError) as caught:
        stage.main()
    message = str(caught.value)
    assert "nan" in message.lower() and "step 4" in message, message
    assert message.endswith(str(tmp_path / "ckpt" / "checkpoint-2"))
    assert not out.exists() and not out.with_name("adapter.partial").exists()
    assert not (tmp_path / "train.json").exists() and not (tmp_path / "loss.csv").exists()
    assert checkpoint_steps(tmp_path / "ckpt") == [2]
    steps = [int(r[0]) for r in read_loss_csv(tmp_path / "ckpt" / "train_loss.csv")[1:]]
    assert steps == [1, 2, 3, 4]  # the live curve, after the last roll-back to step 2


class PoisonOnce(PoisonAfter):
    """A one-off spike: NaN weights after step `step` the first time only."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.step is not None and state.global_step == self.step:
            super().on_step_end(args, state, control, model=model, **kwargs)
            self.step = None


def test_a_one_off_nan_rolls_back_with_half_the_learning_rate(tiny_models, tmp_path, monkeypatch):
    ExtraCallbacks(monkeypatch, PoisonOnce(3))
    result = run_training(tiny_models["llama"], tmp_path, max_steps=6, logging_steps=1, save_steps=2,
                          lr_scheduler="constant")
    stats = result.stats
    assert stats["steps"] == 6 and math.isfinite(stats["final_loss"]) and stats["rollbacks"] == 1
    assert result.events == [{"step": 4, "event": "rollback", "reason": "training loss became nan at step 4",
                                "resumed_from_step": 2, "learning_rate_factor": 0.5}]
    assert stats["final_learning_rate_factor"] == 0.5
    rows = read_loss_csv(tmp_path / "loss.csv")[1:]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5, 6]  # steps 3-4 logged again, once
    assert all(math.isfinite(float(r[1])) for r in rows)
    rates = [float(r[2]) for r in rows]
    assert rates[:2] == [TRAIN["learning_rate"]] * 2
    assert rates[2:] == pytest.approx([TRAIN["learning_rate"] * 0.5] * 4)


class OutOfMemoryOnSecondVisit(TrainerCallback):
    """Out of memory the second time training ends step `step` (after a roll-back replays it)."""

    def __init__(self, step: int):
        self.step, self.visits = step, 0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.visits += 1
            if self.visits == 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")


def test_running_out_of_memory_after_a_roll_back_keeps_the_lower_learning_rate(tiny_models, tmp_path,
                                                                                monkeypatch):
    """Roll back to step 2 at half the rate, then run out of memory before the next checkpoint:
    the restart resumes from step 2's checkpoint, saved at the full rate, and still trains at half."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ExtraCallbacks(monkeypatch, PoisonOnce(3), OutOfMemoryOnSecondVisit(3))
    result = run_training(tiny_models["llama"], tmp_path, max_steps=6, logging_steps=1, save_steps=2,
                          lr_scheduler="constant")
    stats = result.stats
    assert [e["event"] for e in result.events] == ["rollback", "out of GPU memory"]
    assert result.events[1]["resumed_from_step"] == 2
    assert stats["steps"] == 6 and stats["final_learning_rate_factor"] == 0.5
    rates = [float(r[2]) for r in read_loss_csv(tmp_path / "loss.csv")[1:]]
    assert rates == pytest.approx([TRAIN["learning_rate"]] * 2 + [TRAIN["learning_rate"] * 0.5] * 4)


def test_a_resumed_run_goes_on_at_the_rate_its_checkpoint_was_saved_at(tiny_models, tmp_path, monkeypatch):
    """Stopped after a roll-back, a later run resumes from the halved checkpoint at the halved rate.
    (The divergence stops training before step 4 is saved, so step 4's save follows the roll-back.)"""
    ExtraCallbacks(monkeypatch, PoisonOnce(3), InterruptAfter(4))
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny_models["llama"], tmp_path, max_steps=8, logging_steps=1, save_steps=2,
                     lr_scheduler="constant")
    monkeypatch.undo()
    result = run_training(tiny_models["llama"], tmp_path, max_steps=8, logging_steps=1, save_steps=2,
                          lr_scheduler="constant")
    stats = result.stats
    assert stats["resumed_from_step"] == 4 and stats["rollbacks"] == 0
    assert stats["final_learning_rate_factor"] == 0.5
    rates = [float(r[2]) for r in read_loss_csv(tmp_path / "loss.csv")[1:]]
    assert rates == pytest.approx([TRAIN["learning_rate"]] * 2 + [TRAIN["learning_rate"] * 0.5] * 6)


def test_the_last_step_is_logged_and_no_nan_reaches_the_metrics(tiny_models, tmp_path):
    stats = run_training(tiny_models["llama"], tmp_path, max_steps=3, logging_steps=10, save_steps=100).stats
    assert [int(r[0]) for r in read_loss_csv(tmp_path / "loss.csv")[1:]] == [3]
    assert math.isfinite(stats["final_loss"]) and math.isfinite(stats["mean_loss"])
    json.dumps(stats, allow_nan=False)
    assert finite_or_none(float("nan")) is None and finite_or_none(float("inf")) is None
    assert finite_or_none(1.234567) == 1.23457


def test_progress_line_off_a_terminal(tiny_models, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SQLORA_PROGRESS", "0")
    monkeypatch.setattr(callbacks.ProgressLine, "__init__",
                        lambda self, every_s=0.0, stream=None: orig_init(self, 0.0, stream))
    run_training(tiny_models["llama"], tmp_path, max_steps=3, logging_steps=1, save_steps=100)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert all("tokens/s" in line and "eta" in line and "loss" in line for line in lines[1:])


orig_init = callbacks.ProgressLine.__init__


def test_batch_plan_keeps_the_examples_per_step():
    plan = BatchPlan(64, 1)
    assert plan.halved() == BatchPlan(32, 2)
    assert BatchPlan(12, 2).halved() == BatchPlan(6, 4)
    assert BatchPlan(9, 1).halved() == BatchPlan(3, 3)
    assert BatchPlan(1, 4).halved() is None
    steps = [plan]
    while (smaller := steps[-1].halved()) is not None:
        steps.append(smaller)
    assert all(p.micro_batch * p.accumulation == 64 for p in steps) and steps[-1] == BatchPlan(1, 64)


def test_micro_batch_shrinks_until_it_fits(tiny_models, tmp_path, monkeypatch):
    """On a card where more than 2 sequences at once run out of memory, micro-batches of 2
    with 4 accumulation steps keep 8 examples per optimizer step."""
    seen = []

    def forward_fits_two(module, args, kwargs):
        ids = kwargs.get("input_ids")
        seen.append(ids.shape[0])
        if ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    result = run_training(tiny_models["llama"], tmp_path, max_steps=1, save_steps=100, batch_size=8)
    trainer = result.trainer
    handle = trainer.model.register_forward_pre_hook(forward_fits_two, with_kwargs=True)
    try:
        plan = fit_micro_batch(trainer, BatchPlan(8, 1), 40)
    finally:
        handle.remove()
    assert plan == BatchPlan(2, 4) and seen == [8, 4, 2]
    assert all(p.grad is None for p in trainer.model.parameters())


def checkpointing_on(model) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in model.get_base_model().modules())


class CardLimit:
    """A forward pre-hook standing in for a small card: more than `plain` sequences at once run
    out of memory, or more than `checkpointed` with activation checkpointing on. Records what
    each probe ran as (micro-batch, training mode, checkpointing)."""

    def __init__(self, model, plain: int, checkpointed: int):
        self.model, self.plain, self.checkpointed, self.seen = model, plain, checkpointed, []

    def __call__(self, module, args, kwargs):
        size, on = kwargs["input_ids"].shape[0], checkpointing_on(self.model)
        self.seen.append((size, self.model.training, on))
        if size > (self.checkpointed if on else self.plain):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")


def choose_on(card: CardLimit, trainer, checkpointing="auto"):
    """`choose_plan` for 8 sequences of 40 tokens a step, on `card`."""
    handle = trainer.model.register_forward_pre_hook(card, with_kwargs=True)
    try:
        return choose_plan(trainer, BatchPlan(8, 1), 40, checkpointing)
    finally:
        handle.remove()


@pytest.mark.parametrize("checkpointed_cost, expected", [(1.0, BatchPlan(8, 1, True)), (5.0, BatchPlan(2, 4))])
def test_auto_checkpointing_takes_the_faster_way_that_fits(tiny_models, tmp_path, monkeypatch,
                                                          checkpointed_cost, expected):
    """Without checkpointing 2 sequences fit, with it all 8. The probes run in training mode (an
    eval-mode probe would keep no activations and fit far more than training can), each way is
    timed, and the faster one is taken; the model is left as it was."""
    result = run_training(tiny_models["llama"], tmp_path, max_steps=1, save_steps=100, batch_size=8)
    trainer = result.trainer
    trainer.model.eval()
    card = CardLimit(trainer.model, plain=2, checkpointed=8)
    real_probe = plan_module.probe_step

    def timed_probe(trainer, plan, length):  # a step takes 1 s plain, checkpointed_cost s checkpointed
        real_probe(trainer, plan, length)
        return checkpointed_cost if plan.checkpointing else 1.0

    monkeypatch.setattr(plan_module, "probe_step", timed_probe)
    plan, measured = choose_on(card, trainer)
    assert plan == expected
    assert "one step of 40-token sequences, micro-batches of 2 without it" in measured and "8 with it" in measured
    assert card.seen[:4] == [(8, True, False), (4, True, False), (2, True, False), (8, True, True)]
    assert not trainer.model.training and not checkpointing_on(trainer.model)
    assert all(p.grad is None for p in trainer.model.parameters())


def test_auto_checkpointing_is_probed_only_where_it_could_fit_more(tiny_models, tmp_path, monkeypatch):
    """With checkpointing as many sequences fit as without (4): nothing to gain, nothing timed.
    Where all 8 fit without it, it is not even probed. Each probe holds Adam's state: two float32
    numbers per trainable weight."""
    result = run_training(tiny_models["llama"], tmp_path, max_steps=1, save_steps=100, batch_size=8)
    trainer = result.trainer
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    held, real_empty = [], torch.empty

    def recording_empty(*size, **options):
        held.append((size, options.get("dtype")))
        return real_empty(*size, **options)

    monkeypatch.setattr(torch, "empty", recording_empty)
    card = CardLimit(trainer.model, plain=4, checkpointed=4)
    plan, measured = choose_on(card, trainer)
    assert plan == BatchPlan(4, 2) and measured == ""
    assert card.seen == [(8, True, False), (4, True, False), (8, True, True), (4, True, True)]
    assert held.count(((2 * trainable,), torch.float32)) == 4
    card = CardLimit(trainer.model, plain=8, checkpointed=8)
    assert choose_on(card, trainer) == (BatchPlan(8, 1), "")
    assert card.seen == [(8, True, False)]


@pytest.mark.parametrize("out_of_memory_when_timed, expected", [
    ({False}, BatchPlan(8, 1, True)),
    ({False, True}, BatchPlan(4, 2, True)),  # neither way: a smaller checkpointed micro-batch
])
def test_a_plan_that_runs_out_of_memory_when_timed_is_not_taken(tiny_models, tmp_path, monkeypatch,
                                                                 out_of_memory_when_timed, expected):
    """A micro-batch that fitted once, at the edge of the card, can run out of memory when timed
    (the allocator's memory is laid out differently by then): the other way is taken, not a crash."""
    result = run_training(tiny_models["llama"], tmp_path, max_steps=1, save_steps=100, batch_size=8)
    trainer = result.trainer
    card = CardLimit(trainer.model, plain=2, checkpointed=8)
    real_probe, fitted = plan_module.probe_step, []

    def probe_at_the_edge(trainer, plan, length):
        seconds = real_probe(trainer, plan, length)
        if plan in fitted and plan.checkpointing in out_of_memory_when_timed:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        fitted.append(plan)
        return seconds

    monkeypatch.setattr(plan_module, "probe_step", probe_at_the_edge)
    plan, measured = choose_on(card, trainer)
    assert plan == expected
    assert "2 without it ran out of memory when timed" in measured
    if True in out_of_memory_when_timed:
        assert "8 with it ran out of memory when timed; took 4 with it" in measured
    else:
        assert "8 with it ran " in measured and "took" not in measured
    assert all(p.grad is None for p in trainer.model.parameters())


@pytest.mark.parametrize("setting, expected", [(False, BatchPlan(2, 4)), (True, BatchPlan(8, 1, True))])
def test_a_set_checkpointing_is_probed_as_set(tiny_models, tmp_path, setting, expected):
    result = run_training(tiny_models["llama"], tmp_path, max_steps=1, save_steps=100, batch_size=8)
    trainer = result.trainer
    card = CardLimit(trainer.model, plain=2, checkpointed=8)
    plan, measured = choose_on(card, trainer, setting)
    assert plan == expected and measured == ""
    assert {on for _, _, on in card.seen} == {setting}


def test_data_parallel_processes_agree_on_the_smallest_plan():
    assert common_plan([BatchPlan(16, 4, True), BatchPlan(4, 16)]) == BatchPlan(4, 16, True)
    assert common_plan([BatchPlan(8, 8), BatchPlan(8, 8)]) == BatchPlan(8, 8)
    assert common_plan([BatchPlan(64, 1)]) == BatchPlan(64, 1)


def test_a_checkpointed_plan_trains_with_checkpointing(tiny_models, tmp_path):
    result = run_training(tiny_models["llama"], tmp_path, max_steps=2, save_steps=100, gradient_checkpointing=True)
    assert result.stats["gradient_checkpointing"] is True and result.stats["steps"] == 2
    assert checkpointing_on(result.trainer.model)


def test_schedule_by_model_size():
    train = TrainParams.read({**TRAIN, "learning_rate": "auto", "epochs": "auto"})
    small, qwen_05b, large = (resolved_schedule(train, n) for n in (135_000_000, 630_000_000, 1_540_000_000))
    assert (small.learning_rate, small.epochs, small.dequantize, small.float32_norms) == (1e-3, 6, True, False)
    assert (qwen_05b.learning_rate, qwen_05b.epochs, qwen_05b.dequantize, qwen_05b.float32_norms) == (2e-4, 2, True, False)
    assert (large.learning_rate, large.epochs, large.dequantize, large.float32_norms) == (2e-4, 2, False, True)
    fixed = TrainParams.read({**TRAIN, "learning_rate": 5e-4, "epochs": 3, "dequantize": False,
                              "float32_norms": True})
    assert resolved_schedule(fixed, 135_000_000) == fixed


def quantized_layers(model) -> int:
    return sum(type(m).__name__ == "Linear4bit" for m in model.modules())


@pytest.mark.parametrize("float32_norms", [True, False])
def test_the_dequantized_base_trains_as_the_4bit_one(tiny_models, tmp_path, float32_norms):
    """The same weights, held as 16-bit numbers: the same losses step by step, and the same adapter."""
    runs = {}
    for dequantize in (False, True):
        out = tmp_path / str(dequantize)
        result = run_training(tiny_models["llama"], out, max_steps=3, save_steps=100, dequantize=dequantize,
                              float32_norms=float32_norms)
        model = result.trainer.model
        assert result.stats["dequantized"] is dequantize
        assert result.stats["float32_norms"] is float32_norms
        assert (quantized_layers(model) == 0) is dequantize
        if float32_norms:
            assert model.get_input_embeddings().weight.dtype == torch.float32
        runs[dequantize] = ([float(row[1]) for row in read_loss_csv(out / "loss.csv")[1:]],
                            {name: p.detach().float() for name, p in model.named_parameters() if p.requires_grad})
    (losses_4bit, adapter_4bit), (losses_16bit, adapter_16bit) = runs[False], runs[True]
    assert losses_16bit == pytest.approx(losses_4bit, rel=1e-5)
    assert adapter_16bit.keys() == adapter_4bit.keys()
    # Adam moves a weight by about the learning rate whatever its gradient's size, so the few
    # weights whose gradients are near zero and differ in their last bits can end apart: compare
    # the adapters as a whole
    for name, weight in adapter_4bit.items():
        assert (adapter_16bit[name] - weight).abs().mean() <= 0.01 * weight.abs().mean(), name
        assert adapter_16bit[name].dtype == weight.dtype


def test_a_model_past_the_16bit_sizes_keeps_its_4bit_layers(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setattr(schedule, "SIZE_SCHEDULES", tuple(
        dataclasses.replace(size, max_parameters=1) if size.max_parameters < math.inf else size
        for size in schedule.SIZE_SCHEDULES))
    result = run_training(tiny_models["llama"], tmp_path, max_steps=1, save_steps=100)
    assert result.stats["dequantized"] is False and result.stats["float32_norms"] is True
    assert quantized_layers(result.trainer.model) > 0


def test_parameter_count_is_the_unquantized_models(tiny_models):
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    quantized = load_quantized_model(tiny_models["llama"], QUANT, for_training=True)
    assert parameter_count(quantized) == parameter_count(plain) == sum(p.numel() for p in plain.parameters())


def test_train_json_names_the_schedule_it_resolved(tiny_models, tmp_path):
    result = run_training(tiny_models["llama"], tmp_path, max_steps=1, save_steps=100,
                          learning_rate="auto", epochs="auto", gradient_checkpointing="auto")
    stats = result.stats
    assert (stats["learning_rate"], stats["epochs"]) == (1e-3, 6)  # a tiny model: the small schedule
    assert stats["gradient_checkpointing"] is False  # on CPU nothing is probed
    assert stats["model_params"] > 0


def test_out_of_memory_during_training_goes_on_with_smaller_micro_batches(tiny_models, tmp_path, monkeypatch):
    class OutOfMemoryAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3 and args.per_device_train_batch_size > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ExtraCallbacks(monkeypatch, OutOfMemoryAt())
    result = run_training(tiny_models["llama"], tmp_path, max_steps=5, logging_steps=1, save_steps=2, batch_size=4)
    stats = result.stats
    assert stats["steps"] == 5 and stats["micro_batch_size"] == 2 and stats["gradient_accumulation_steps"] == 2
    assert stats["batch_size"] == 4
    assert stats["out_of_memory_restarts"] == 1
    assert result.events[0] == {"step": 3, "event": "out of GPU memory", "micro_batch": 2, "resumed_from_step": 2}
    assert [int(r[0]) for r in read_loss_csv(tmp_path / "loss.csv")[1:]] == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------- resume

def make_checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def test_resumable_checkpoint_new_folder(tmp_path):
    folder = tmp_path / "ckpt"
    assert resumable_checkpoint(folder, "abc") is None
    assert json.loads((folder / FINGERPRINT_FILE).read_text())["fingerprint"] == "abc"


def test_resumable_checkpoint_same_fingerprint(tmp_path):
    folder = tmp_path / "ckpt"
    assert resumable_checkpoint(folder, "abc") is None
    make_checkpoint(folder, 2)
    newest = make_checkpoint(folder, 10)  # newer than checkpoint-2 although it sorts before it as text
    make_checkpoint(folder, 12, complete=False)  # interrupted while saving
    assert resumable_checkpoint(folder, "abc") == str(newest)
    assert (folder / "checkpoint-12").is_dir()  # nothing is deleted on resume


def test_resumable_checkpoint_other_fingerprint_clears(tmp_path):
    folder = tmp_path / "ckpt"
    assert resumable_checkpoint(folder, "abc") is None
    make_checkpoint(folder, 2)
    (folder / "stray.txt").write_text("x")
    assert resumable_checkpoint(folder, "xyz") is None
    assert sorted(p.name for p in folder.iterdir()) == [FINGERPRINT_FILE]
    assert json.loads((folder / FINGERPRINT_FILE).read_text())["fingerprint"] == "xyz"


def test_resumable_checkpoint_without_stamp_or_complete_checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    make_checkpoint(folder, 4)  # a folder left by something else: no fingerprint stamp
    assert resumable_checkpoint(folder, "abc") is None
    assert not (folder / "checkpoint-4").exists()
    make_checkpoint(folder, 6, complete=False)
    assert resumable_checkpoint(folder, "abc") is None
    assert not (folder / "checkpoint-6").exists()


@pytest.fixture(scope="module")
def uninterrupted(tiny_models, tmp_path_factory):
    """Six steps in one go: the loss curve and the batches of each step."""
    out = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as monkeypatch:
        recorder = ExtraCallbacks(monkeypatch)
        result = run_training(tiny_models["llama"], out, run_id="resume-test")
    return {"stats": result.stats, "losses": read_loss_csv(out / "loss.csv"),
            "batches": recorder.batches}


@pytest.mark.parametrize("interrupt_at", [4, 5])
def test_resume_after_interruption(tiny_models, uninterrupted, interrupt_at, tmp_path, monkeypatch):
    """Interrupted right after checkpoint-4 (or one step later), the rerun resumes from
    checkpoint-4 and ends where the uninterrupted run ends, with the same loss curve."""
    with monkeypatch.context() as patch:
        ExtraCallbacks(patch, InterruptAfter(interrupt_at))
        with pytest.raises(KeyboardInterrupt):
            run_training(tiny_models["llama"], tmp_path, run_id="resume-test")
    assert checkpoint_steps(tmp_path / "checkpoints")[-1] == 4

    recorder = ExtraCallbacks(monkeypatch)
    result = run_training(tiny_models["llama"], tmp_path, run_id="resume-test")
    stats = result.stats
    assert stats["resumed_from_step"] == 4
    assert stats["steps"] == 6
    # the resumed steps see the same batches as the uninterrupted run
    assert sorted(recorder.batches) == [5, 6]
    for step in (5, 6):
        assert recorder.batches[step] == uninterrupted["batches"][step], f"step {step}: other data"
    assert stats["final_loss"] == pytest.approx(uninterrupted["stats"]["final_loss"], abs=1e-3)
    assert stats["mean_loss"] == pytest.approx(uninterrupted["stats"]["mean_loss"], abs=1e-3)
    assert stats["tokens"] == uninterrupted["stats"]["tokens"]

    # one loss row per step, the same curve
    losses = read_loss_csv(tmp_path / "loss.csv")
    expected = uninterrupted["losses"]
    assert [r[0] for r in losses] == [r[0] for r in expected] == ["step", "1", "2", "3", "4", "5", "6"]
    for got, want in zip(losses[1:], expected[1:]):
        assert float(got[1]) == pytest.approx(float(want[1]), abs=1e-3)
        assert float(got[2]) == pytest.approx(float(want[2]))


def test_other_configuration_starts_over(tiny_models, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        ExtraCallbacks(patch, InterruptAfter(4))
        with pytest.raises(KeyboardInterrupt):
            run_training(tiny_models["llama"], tmp_path, run_id="first", max_steps=6)
    result = run_training(tiny_models["llama"], tmp_path, run_id="second", max_steps=2)
    assert result.stats["resumed_from_step"] == 0 and result.stats["steps"] == 2
    assert [r[0] for r in read_loss_csv(tmp_path / "loss.csv")] == ["step", "1", "2"]
    assert checkpoint_steps(tmp_path / "checkpoints") == [2]


def test_files_digest_changes_with_content_and_names_a_new_run(tmp_path):
    from sqlora.train.resume import files_digest

    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"\0" * 3_000_000)
    train = tmp_path / "train.jsonl"
    train.write_text('{"a": 1}\n')
    first = files_digest([train, base])
    assert files_digest([train, base]) == first
    (base / "model.safetensors").write_bytes(b"\0" * 2_999_999 + b"\1")  # same size, last byte differs
    assert files_digest([train, base]) != first
    second = files_digest([train, base])
    train.write_text('{"a": 2}\n')  # another training set of the same size
    assert files_digest([train, base]) != second


@pytest.mark.parametrize("change", ["nothing", "training data", "base model"])
def test_train_stage_resumes_only_the_same_base_and_data(tiny_models, tmp_path, monkeypatch, change):
    """An interrupted stage resumes from its checkpoint; with other training data or another base
    model (same parameters, same code) it starts over."""
    import shutil

    from tiny_model import build_tiny_model

    base = tmp_path / "base"
    shutil.copytree(tiny_models["llama"], base)
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["quant"], params["lora"] = as_dict(QUANT), as_dict(LORA)
    params["train"] = {**TRAIN, "max_steps": 6, "logging_steps": 1, "save_steps": 2}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    monkeypatch.setattr(sys, "argv", [
        "train.py", "--base", str(base), "--train", str(data), "--out", str(tmp_path / "adapter"),
        "--checkpoints", str(tmp_path / "ckpt"), "--metrics", str(tmp_path / "train.json"),
        "--details", str(tmp_path / "details.json"), "--loss-curve", str(tmp_path / "loss.csv"),
        "--params", str(tmp_path / "params.yaml")])
    stage = load_script("stages/train.py")
    with monkeypatch.context() as patch:
        ExtraCallbacks(patch, InterruptAfter(4))
        with pytest.raises(KeyboardInterrupt):
            stage.main()
    assert checkpoint_steps(tmp_path / "ckpt") == [2, 4]

    if change == "training data":
        data.write_text("".join(json.dumps(row) + "\n" for row in make_rows(15)), encoding="utf-8")
    elif change == "base model":
        shutil.rmtree(base)
        build_tiny_model(base, "llama", tokenizer=load_tokenizer(tiny_models["llama"]), seed=1)
    stage.main()
    stats = json.loads((tmp_path / "details.json").read_text())
    assert stats["steps"] == 6
    assert stats["resumed_from_step"] == (4 if change == "nothing" else 0)


def test_train_stage_names_its_phases_and_prints_no_library_noise(tiny_models, tmp_path, run_script):
    """Off a terminal: a line per phase and a progress line, and none of the warnings a user
    cannot act on (bitsandbytes' optional CPU kernel, the renamed checkpointing option)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["quant"], params["lora"] = as_dict(QUANT), as_dict(LORA)
    params["train"] = {**TRAIN, "max_steps": 2, "logging_steps": 10, "save_steps": 100}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    result = run_script("stages/train.py", "--base", tiny_models["llama"], "--train", "train.jsonl",
                        "--out", "adapter", "--checkpoints", "ckpt", "--metrics", "train.json",
                        "--details", "details.json",
                        "--loss-curve", "loss.csv", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for phase in ("device: ", "loading ", "training: 16 examples", "step 2/2 (100%)", "saving the adapter"):
        assert phase in out, (phase, out)
    noise = result.stdout + result.stderr
    assert "gemm_4bit_forward" not in noise and "gradient_checkpointing` is deprecated" not in noise
    stats = json.loads((tmp_path / "train.json").read_text())
    assert stats["final_loss"] is not None and [r[0] for r in read_loss_csv(tmp_path / "loss.csv")] == ["step", "2"]
    record = json.loads((tmp_path / "adapter" / "sqlora_adapter.json").read_text())
    assert record["training_events"] == [] and record["compute_dtype"] == "float32"
    assert record["prompt_format"] is None  # train.jsonl made here, not by preprocess


@pytest.mark.parametrize("float32_norms", [True, False])
def test_a_bfloat16_model_trains_and_generates_on_its_dequantized_weights(tiny_models, tmp_path, float32_norms):
    """Float32 norms feed the 16-bit layers float32, in training and in the generations checked after it."""
    from sqlora.predict.generation import generate

    quant = QuantParams(bits=4, bnb_4bit_compute_dtype="bfloat16")
    model = load_quantized_model(tiny_models["llama"], quant, for_training=True)
    tokenizer = load_tokenizer(tiny_models["llama"])
    train = TrainParams.read({**TRAIN, "max_steps": 1, "save_steps": 100, "dequantize": True,
                              "float32_norms": float32_norms})
    train = resolved_schedule(train, parameter_count(model))
    result = train_lora(model, tokenizer, ROWS, train, lora_config(LORA),
                        RunFiles(tmp_path / "checkpoints", tmp_path / "loss.csv", "run"), torch.bfloat16)
    assert result.stats["dequantized"] and math.isfinite(result.stats["final_loss"])
    trained = result.trainer.model
    trained.eval()
    [answer] = generate(trained, tokenizer, [ROWS[0]["prompt"]], batch_size=1, max_new_tokens=4)
    assert isinstance(answer, str)
