"""Collect the runs of a sweep into a markdown table and a plot (the paper's Figure 1).

    python -m loldu.report multirun/2026-11-23/12-00-00 [--metric test/acc] [--wandb]

Reads every ``metrics.json`` below the folder (one per run, written by
``loldu.train.train``) with the run's ``config.yaml``, writes ``report.md``
and ``report.png`` (metric against trainable parameters, log axis) into it,
prints the table, and with ``--wandb`` logs the table and plot to W&B.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

COLUMNS = ("run", "model", "task", "method", "rank", "init", "lr", "seed", "adapter", "trainable")


def collect(folder: str | Path) -> list[dict]:
    """One row per run folder below ``folder`` that holds a metrics.json.

    Raises:
        FileNotFoundError: if no run is found.
    """
    folder = Path(folder)
    rows = []
    for path in sorted(folder.rglob("metrics.json")):
        metrics = json.loads(path.read_text())
        config_path = path.parent / "config.yaml"
        cfg = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
        row = {
            "run": str(path.parent.relative_to(folder)) or ".",
            "model": metrics.get("model") or _dig(cfg, "model", "builder", "name_or_path"),
            "task": metrics.get("task") or _dig(cfg, "task", "data", "source"),
            "method": metrics.get("method"),
            "rank": metrics.get("rank"),
            "init": cfg.get("init"),
            "lr": metrics.get("lr"),
            "seed": metrics.get("seed"),
            "adapter": metrics["params"]["adapter"],
            "trainable": metrics["params"]["trainable"],
        }
        row.update(metrics.get("test", {}))
        row.update(metrics.get("val", {}))
        row.update(metrics.get("train", {}))  # diffusion runs: no validation set
        if "val/loss" in metrics.get("val_before", {}):
            row["val_before/loss"] = metrics["val_before"]["val/loss"]
        row.update(_extra_results(path.parent))
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no metrics.json below {folder}: is it a run or multirun folder of train.py?")
    return rows


def _extra_results(run: Path) -> dict:
    """Scores the evaluation commands wrote into the run folder (concept metrics, lm-eval benchmarks)."""
    row = {}
    concept = run / "concept_metrics.json"
    if concept.exists():
        scores = json.loads(concept.read_text())
        row.update({f"concept/{k}": scores[k] for k in ("dino", "clip_i", "clip_t") if k in scores})
    bench = run / "benchmarks.json"
    if bench.exists():
        for task, values in json.loads(bench.read_text()).get("results", {}).items():
            row.update({f"bench/{task}/{m}": v for m, v in values.items() if not m.endswith("stderr")})
    return row


def _dig(cfg: dict, *keys):
    for key in keys:
        if not isinstance(cfg, dict) or key not in cfg:
            return None
        cfg = cfg[key]
    return cfg


def to_markdown(rows: list[dict], metrics: list[str]) -> str:
    """A markdown table of the identifying columns and the chosen metrics."""
    header = list(COLUMNS) + metrics
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        cells = []
        for key in header:
            value = row.get(key)
            if isinstance(value, float):
                value = f"{value:.4g}"
            elif isinstance(value, int) and key in ("adapter", "trainable"):
                value = f"{value:,}"
            cells.append("" if value is None else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], metric: str, path: Path) -> Path:
    """Metric against trainable parameters (log axis), one series per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({str(r["method"]) for r in rows}):
        pts = sorted((r["trainable"], r[metric]) for r in rows if str(r["method"]) == method and metric in r)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (incl. head)")
    ax.set_ylabel(metric)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a run or multirun folder of train.py")
    parser.add_argument("--metric", default=None, help="metric to plot (default: the first test/ metric found)")
    parser.add_argument("--wandb", action="store_true", help="also log the table and plot to W&B")
    parser.add_argument("--project", default="loldu", help="W&B project for --wandb")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    rows = collect(folder)
    prefixes = ("test/", "val/", "val_before/", "train/", "concept/", "bench/")
    found = sorted({k for r in rows for k in r if k.startswith(prefixes) and not k.endswith("tokens")})
    classification = any(k.startswith("test/") and not k.endswith("loss") for k in found)
    # classifiers: accuracy-like metrics; causal LMs and diffusion: their losses are the metrics
    shown = [k for k in found if not (classification and k.endswith("loss"))]
    if not shown:
        raise SystemExit(f"no metric to report in {folder}")
    metric = args.metric or next((k for k in shown if k.startswith("test/")), shown[0])
    if not any(metric in r for r in rows):
        raise SystemExit(f"metric {metric!r} is in no run; found: {found}")
    table = to_markdown(rows, shown)
    (folder / "report.md").write_text(table)
    png = plot(rows, metric, folder / "report.png")
    print(table)
    print(f"wrote {folder / 'report.md'} and {png}")
    if args.wandb:
        import wandb

        run = wandb.init(project=args.project, job_type="report", name=f"report_{folder.name}")
        run.log(
            {
                "report": wandb.Table(
                    columns=list(COLUMNS) + shown, data=[[r.get(c) for c in list(COLUMNS) + shown] for r in rows]
                ),
                "report_plot": wandb.Image(str(png)),
            }
        )
        run.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
