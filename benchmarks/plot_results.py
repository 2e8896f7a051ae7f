"""Draw RESULTS.md's figures from a run's metrics: the training loss curve and execution
accuracy by hardness for the base and fine-tuned models.

    python benchmarks/plot_results.py metrics --out docs/figures
    python benchmarks/plot_results.py --sweep results --out docs/figures
    python benchmarks/plot_results.py --models "SmolLM2=results/s-bf16-1" "Qwen2.5-Coder=results/q-bf16-1" ...
    python benchmarks/plot_results.py --seeds "defaults=docs/results/h200x2-2026-11-30-seeds/smollm2_defaults_seed*" ...
(--sweep: one bar per experiment folder, its fine-tuned strict score on all questions;
 --models: runs side by side, fine-tuned strict score by hardness and the loss curves, in models.png;
 --seeds: recipes side by side, a dot per run (folders matching the pattern) and a line at their mean, in seeds.png)
(needs matplotlib: python -m pip install matplotlib)
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

LEVELS = ("easy", "medium", "hard", "extra", "all")


def read_scores(folder: Path) -> dict:
    """eval.json with eval_details.json beside it (scores by hardness and counts), where there is one."""
    details = folder / "eval_details.json"
    return {**json.loads((folder / "eval.json").read_text()),
            **(json.loads(details.read_text()) if details.is_file() else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", type=Path, nargs="?", help="folder with eval.json and train_loss.csv")
    parser.add_argument("--sweep", type=Path, help="folder of experiment folders, each with eval.json")
    parser.add_argument("--models", nargs="+", metavar="LABEL=FOLDER",
                        help="runs to compare, each a label and a folder with eval.json and train_loss.csv")
    parser.add_argument("--seeds", nargs="+", metavar="LABEL=PATTERN",
                        help="recipes to compare, each a label and a folder pattern matching one folder per run")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("error: this script needs matplotlib: python -m pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not (args.metrics or args.sweep or args.models or args.seeds):
        parser.error("give a run's metrics folder, --sweep FOLDER, --models LABEL=FOLDER ... or --seeds LABEL=PATTERN ...")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.sweep:
        plot_sweep(plt, args.sweep, args.out / "sweep.png")
    if args.metrics:
        plot_run(plt, args.metrics, args.out)
    if args.models:
        runs = [(label, Path(folder)) for label, _, folder in (m.partition("=") for m in args.models)]
        plot_models(plt, runs, args.out / "models.png")
    if args.seeds:
        groups = []
        for label, _, pattern in (s.partition("=") for s in args.seeds):
            folders = sorted(Path(pattern).parent.glob(Path(pattern).name))
            if not folders:
                parser.error(f"--seeds {label}={pattern}: no folder matches")
            groups.append((label, folders))
        plot_seeds(plt, groups, args.out / "seeds.png")


def plot_sweep(plt, sweep: Path, out: Path) -> None:
    runs = sorted((json.loads(f.read_text())["finetuned_exec_all"], f.parent.name)
                  for f in sweep.glob("*/eval.json"))
    figure, axes = plt.subplots(figsize=(6.4, 0.35 * len(runs) + 0.9))
    bars = axes.barh([name for _, name in runs], [score for score, _ in runs], color="tab:orange")
    axes.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    axes.set_xlim(0, max(score for score, _ in runs) * 1.15)
    axes.set_xlabel("fine-tuned execution accuracy (strict, all)")
    axes.set_title(f"Experiments in {sweep.name}")
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    print(f"wrote {out}")


def plot_models(plt, runs: list[tuple[str, Path]], out: Path) -> None:
    figure, (bars_axes, loss_axes) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(runs)
    for n, (label, folder) in enumerate(runs):
        scores = read_scores(folder)
        values = [scores[f"finetuned_exec_{level}"] for level in LEVELS]
        bars = bars_axes.bar([i + (n - (len(runs) - 1) / 2) * width for i in range(len(LEVELS))], values, width,
                             label=label)
        bars_axes.bar_label(bars, fmt="%.2f", fontsize=6)
        with (folder / "train_loss.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        loss_axes.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], label=label)
    bars_axes.set_xticks(range(len(LEVELS)), LEVELS)
    bars_axes.set_ylabel("fine-tuned execution accuracy (strict)")
    bars_axes.set_ylim(0, 1.15)  # room above the bars for the legend
    bars_axes.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    bars_axes.legend(frameon=False, fontsize=8, loc="upper center", ncol=2)
    bars_axes.set_title("Spider dev, by hardness")
    loss_axes.set_yscale("log")
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("training loss (SQL tokens)")
    loss_axes.set_title("Loss: capped and uncapped")
    loss_axes.legend(frameon=False, fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    print(f"wrote {out}")


def plot_seeds(plt, groups: list[tuple[str, list[Path]]], out: Path) -> None:
    figure, axes = plt.subplots(figsize=(7.5, 3.4))
    width = 0.8 / len(groups)
    for n, (label, folders) in enumerate(groups):
        runs = [read_scores(folder) for folder in folders]
        for i, level in enumerate(LEVELS):
            x = i + (n - (len(groups) - 1) / 2) * width
            values = [run[f"finetuned_exec_{level}"] for run in runs]
            mean = sum(values) / len(values)
            axes.scatter([x] * len(values), values, s=14, color=f"C{n}", alpha=0.7,
                         label=f"{label} ({len(runs)} runs)" if i == 0 else None)
            axes.hlines(mean, x - width * 0.4, x + width * 0.4, color=f"C{n}")
            axes.annotate(f"{mean:.3f}", (x, mean), xytext=(0, -12 if n % 2 else 6), textcoords="offset points",
                          ha="center", fontsize=7)
    axes.set_xticks(range(len(LEVELS)), LEVELS)
    axes.set_ylabel("fine-tuned execution accuracy (strict)")
    axes.set_ylim(0, 1)
    axes.legend(frameon=False, fontsize=8)
    axes.set_title("Spider dev, by hardness: one dot per run, a line at the mean")
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    print(f"wrote {out}")


def plot_run(plt, metrics: Path, out: Path) -> None:
    scores = read_scores(metrics)
    figure, axes = plt.subplots(figsize=(6.4, 3.2))
    width = 0.38
    for shift, model in ((-width / 2, "base"), (width / 2, "finetuned")):
        values = [scores[f"{model}_exec_{level}"] for level in LEVELS]
        bars = axes.bar([i + shift for i in range(len(LEVELS))], values, width, label=model)
        axes.bar_label(bars, fmt="%.2f", fontsize=8)
    axes.set_xticks(range(len(LEVELS)), [f"{lvl}\n({scores[f'count_{lvl}']})" for lvl in LEVELS])
    axes.set_ylabel("execution accuracy (strict)")
    axes.set_ylim(0, 1)
    axes.legend(frameon=False)
    axes.set_title("Spider dev, by hardness")
    figure.tight_layout()
    figure.savefig(out / "accuracy_by_hardness.png", dpi=120)

    with (metrics / "train_loss.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    figure, axes = plt.subplots(figsize=(6.4, 3.0))
    axes.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows])
    axes.set_xlabel("step")
    axes.set_ylabel("training loss (SQL tokens)")
    axes.set_title("QLoRA fine-tuning loss")
    figure.tight_layout()
    figure.savefig(out / "train_loss.png", dpi=120)
    print(f"wrote {out / 'accuracy_by_hardness.png'} and {out / 'train_loss.png'}")


if __name__ == "__main__":
    main()
