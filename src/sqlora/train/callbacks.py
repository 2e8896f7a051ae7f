"""What the trainer tells us as it goes: the loss curve, the divergence guard, a progress line
when no bar is shown, and a lower learning rate after a roll-back."""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from ..core.progress import is_main_process
from .resume import step_of


class LossLog(TrainerCallback):
    """Appends each logged loss to a CSV as it comes, so an interrupted run keeps its curve; the
    last step is always logged, so a run shorter than `logging_steps` still has a loss."""

    def __init__(self, loss_csv: Path, resumed_from_step: int):
        self.loss_csv = loss_csv
        if is_main_process():
            self.keep_until(resumed_from_step)

    def keep_until(self, step: int) -> None:
        """Drop rows after `step` (a resumed or rolled-back run logs them again)."""
        self.loss_csv.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if step and self.loss_csv.is_file():
            with self.loss_csv.open(newline="") as f:
                kept = [row for row in list(csv.reader(f))[1:] if row and int(row[0]) <= step]
        with self.loss_csv.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "loss", "learning_rate"])
            writer.writerows(kept)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and state.is_world_process_zero:
            with self.loss_csv.open("a", newline="") as f:
                csv.writer(f).writerow([state.global_step, round(float(logs["loss"]), 5),
                                        logs.get("learning_rate", "")])


class LossGuard(TrainerCallback):
    """Stops a run whose loss is NaN/inf or collapses to zero, before it saves a broken adapter."""

    def __init__(self):
        self.problem: str | None = None
        self.non_finite = False

    def reset(self) -> None:
        self.problem, self.non_finite = None, False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        loss = float(logs["loss"])
        if math.isnan(loss) or math.isinf(loss):
            self.problem = f"training loss became {loss} at step {state.global_step}"
            self.non_finite = True
        elif loss < 1e-4 and state.global_step > args.logging_steps:
            self.problem = f"training loss collapsed to {loss:.2g} at step {state.global_step}"
        if self.problem:
            control.should_training_stop = True
            control.should_save = False


class ProgressLine(TrainerCallback):
    """Off a terminal (no bar), a short line every `every_s` seconds: step, loss, tokens/s, ETA."""

    def __init__(self, every_s: float = 30.0, stream=None):
        self.every_s, self.stream = every_s, stream or sys.stdout
        self.started = self.last_line = 0.0
        self.first_step = self.first_tokens = 0
        self.loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self.last_line = time.perf_counter()
        self.first_step, self.first_tokens = state.global_step, state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        last = state.global_step >= state.max_steps
        if not state.is_world_process_zero or (now - self.last_line < self.every_s and not last):
            return
        self.last_line = now
        elapsed = now - self.started
        done = state.global_step - self.first_step
        tokens_per_s = (state.num_input_tokens_seen - self.first_tokens) / elapsed if elapsed else 0.0
        eta = elapsed / done * (state.max_steps - state.global_step) if done else 0.0
        loss = "" if self.loss is None else f"  loss {self.loss:.4f}"
        print(f"step {state.global_step}/{state.max_steps} ({state.global_step / max(state.max_steps, 1):.0%})"
              f"{loss}  {tokens_per_s:,.0f} tokens/s  elapsed {clock(elapsed)}  eta {clock(eta)}",
              file=self.stream, flush=True)


class LearningRateFactor(TrainerCallback):
    """Keeps the learning rate at `factor` times the schedule's, across resumes.

    Each checkpoint records the factor it was saved under. A resumed run restores the optimizer
    and schedule of its checkpoint, so at the start of training the rate is scaled by
    `factor` / (the checkpoint's factor): a roll-back halves it, and a later resume from a
    checkpoint saved before that roll-back (after running out of memory, say) keeps it halved.
    """

    FILE = "sqlora_learning_rate_factor.json"

    def __init__(self):
        self.factor, self.resume_from = 1.0, None

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        saved = self.saved_factor(self.resume_from) if self.resume_from else 1.0
        scale = self.factor / saved
        if scale == 1.0:
            return
        if lr_scheduler is not None and hasattr(lr_scheduler, "base_lrs"):
            lr_scheduler.base_lrs = [lr * scale for lr in lr_scheduler.base_lrs]
            if hasattr(lr_scheduler, "_last_lr"):  # what the next log reports
                lr_scheduler._last_lr = [lr * scale for lr in lr_scheduler._last_lr]
        if optimizer is not None:
            for group in optimizer.param_groups:
                group["lr"] *= scale
                if "initial_lr" in group:
                    group["initial_lr"] *= scale

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if is_main_process() and checkpoint.is_dir():
            (checkpoint / self.FILE).write_text(json.dumps({"factor": self.factor}) + "\n")

    @classmethod
    def saved_factor(cls, checkpoint) -> float:
        path = Path(checkpoint) / cls.FILE
        return json.loads(path.read_text())["factor"] if path.is_file() else 1.0


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class TrainingCallbacks:
    """The callbacks of one training run, kept across the trainers that its restarts build."""

    def __init__(self, loss_csv: Path, resume_from, *, progress_line: bool):
        self.loss_log = LossLog(loss_csv, step_of(resume_from))
        self.guard, self.rate = LossGuard(), LearningRateFactor()
        # a run resumed after a roll-back in an earlier process goes on at that process's rate
        self.first_factor = LearningRateFactor.saved_factor(resume_from) if resume_from else 1.0
        self.all = [self.loss_log, self.guard, self.rate] + ([ProgressLine()] if progress_line else [])

    def start(self, resume_from, *, rollbacks: int, factor: float) -> None:
        """Before each (re)start: the learning rate stays lowered by every roll-back so far."""
        self.rate.factor = self.first_factor * factor ** rollbacks
        self.rate.resume_from = resume_from
