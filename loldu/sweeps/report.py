"""Collect the runs of a sweep into markdown tables and a plot whose x-axis is what the sweep varied.

    python -m loldu.report multirun/2026-11-23/12-00-00 [--metric test/acc] [--wandb]
    python -m loldu.report <folder of grid and seed runs> --tune lr [--on val/acc] [--print-best]
    make report DIR=multirun/2026-11-23/12-00-00 ARGS=--wandb

Reads every run folder below the folder (``config.yaml``, ``metrics.json``, ``status.json`` and Hydra's
``.hydra/overrides.yaml``, see :mod:`loldu.sweeps.runs`), writes ``report.md`` (one row per run, failed and
unfinished ones with their error, then the settings averaged over seeds; with ``--tune lr``, the lr chosen on a
validation metric for each setting and the results there, also in ``tuned.json``, see :mod:`loldu.sweeps.tune`)
and ``report.png`` (see
:mod:`loldu.sweeps.plots`; method comparisons also ``report_params.png``) into it, prints the tables, and with
``--wandb`` logs them and the plots to W&B, in the sweep's group of the project its runs logged to.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from loldu.config.saved import UnsafeRunFolder, read_run_config
from loldu.run.folder import atomic_write_text, write_json
from loldu.sweeps.plots import aggregate, axis, plot, plot_params
from loldu.sweeps.runs import FIELDS, RESULT_PREFIXES, collect, run_folders, swept_keys, value
from loldu.sweeps.tune import tune, tuned_groups

__all__ = ["aggregate", "axis", "collect", "main", "metric_columns", "swept_keys", "to_markdown"]
COLUMNS = ("run", "status", *FIELDS, "adapter", "head", "trainable", "step_s")


def metric_columns(rows: list[dict]) -> list[str]:
    """The metrics to tabulate: accuracy-like ones for classifiers, losses for causal LMs and diffusion."""
    found = sorted({k for r in rows for k in r if k.startswith(RESULT_PREFIXES) and not k.endswith("tokens")})
    classification = any(k.startswith("test/") and not k.endswith("loss") for k in found)
    return [k for k in found if not (classification and k.endswith("loss"))]


def _cell(value, key: str = "") -> str:
    if isinstance(value, tuple):  # (mean, std) over seeds
        return "nan" if math.isnan(value[0]) else f"{value[0]:.4g} ± {value[1]:.2g}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and key in ("adapter", "head", "trainable"):
        return f"{value:,}"
    return "" if value is None else str(value).replace("|", "/").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(v, k) for k, v in zip(header, row, strict=True)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def run_table(rows: list[dict], swept: list[str], metrics: list[str]) -> tuple[list[str], list[list]]:
    """Header and cells of the per-run table: identity columns, the other swept overrides, metrics, error."""
    extra = [k for k in swept if k not in COLUMNS]
    header = list(COLUMNS) + extra + metrics + ["error"]
    return header, [[value(r, k) if k in extra else r.get(k) for k in header] for r in rows]


def seed_table(groups: list[dict], swept: list[str], metrics: list[str]) -> tuple[list[str], list[list]]:
    """Header and cells of the table over seeds: the swept settings, runs, seeds, mean ± std of each metric."""
    header = [k for k in swept if k != "seed"] + ["n", "seeds"] + metrics
    return header, [[g.get(k) for k in header] for g in groups]


def tuned_table(groups: list[dict], swept: list[str], metrics: list[str]) -> tuple[list[str], list[list]]:
    """Header and cells of the table at the tuned values: settings, runs, seeds, parameter counts, step time and
    mean ± std of each metric."""
    header = [k for k in swept if k != "seed"] + ["n", "seeds", "adapter", "head", "trainable", "step_s"] + metrics
    return header, [[g.get(k) for k in header] for g in groups]


def to_markdown(rows: list[dict], metrics: list[str], swept: list[str] | None = None) -> str:
    """The per-run table, then (several runs) the seed-averaged one."""
    swept = swept_keys(rows) if swept is None else swept
    text = _table(*run_table(rows, swept, metrics))
    if len(rows) > 1:
        text += "\nMean ± std over seeds (finished runs):\n\n" + _table(
            *seed_table(aggregate(rows, swept, metrics), swept, metrics)
        )
    return text


def _wandb_target(rows: list[dict], folder: Path, project: str | None) -> dict:
    """Project and entity the runs logged to (their config.yaml), and the sweep's group (loldu.run.tracking)."""
    target, sweep_name = {"project": project or "loldu", "entity": None}, None
    for run in run_folders(folder):
        try:
            cfg = read_run_config(run, check_targets=False) if (run / "config.yaml").is_file() else None
        except UnsafeRunFolder:
            continue
        if isinstance(cfg, dict):
            node = (cfg.get("logger") or {}).get("wandb") or {}
            target.update(project=project or node.get("project") or "loldu", entity=node.get("entity"))
            sweep_name = cfg.get("sweep_name")
            break
    overrides = (r["overrides"].get("sweep") for r in rows if r["overrides"].get("sweep"))
    sweep_name = sweep_name or next(overrides, None)
    target["group"] = "_".join([sweep_name or "sweep", folder.resolve().parent.name, folder.resolve().name])
    return target


def log_to_wandb(rows: list[dict], folder: Path, tables: dict, plots: list[Path], project: str | None) -> None:
    """Log the tables and plots as one W&B run of ``job_type="report"`` in the sweep's group."""
    import wandb

    target = _wandb_target(rows, folder, project)
    run = wandb.init(job_type="report", name=f"report_{folder.name}", dir=str(folder), **target)
    data = {
        key: wandb.Table(columns=header, data=[[_cell(v) for v in r] for r in cells])
        for key, (header, cells) in tables.items()
    }
    data.update({f"report/{p.stem}": wandb.Image(str(p)) for p in plots})
    run.log(data)
    run.finish()


def _tuned_text(choices: list[dict], key: str, table: tuple[list[str], list[list]]) -> str:
    """The tuned section of report.md: each choice with its grid scores (edge choices flagged), then the table."""
    lines = [f"\n{key} chosen on {choices[0]['on']} (mean over seeds {choices[0]['on_seeds']} run at every {key}):\n"]
    for c in choices:
        setting = ", ".join(f"{k}={v}" for k, v in c.items() if k not in (key, "on", "on_seeds", "scores", "edge"))
        scores = ", ".join(f"{v}: {s:.4g}" for v, s in c["scores"].items())
        flag = f" (at the edge of the grid: try a wider {key} range)" if c["edge"] else ""
        lines.append(f"- {setting or 'all runs'}: {key}={c[key]}{flag}; {scores}")
    return "\n".join(lines) + f"\n\nAt the chosen {key} (mean ± std over seeds):\n\n" + _table(*table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loldu.report", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a run or multirun folder of train.py")
    parser.add_argument("--metric", default=None, help="metric to plot (default: the first test/ metric found)")
    parser.add_argument("--wandb", action="store_true", help="also log the tables and plots to W&B")
    parser.add_argument("--project", default=None, help="W&B project for --wandb (default: the runs' project)")
    parser.add_argument("--x", default=None, help="swept key on the plot's x-axis (default: rank, lr, init, ...)")
    parser.add_argument("--tune", default=None, metavar="KEY", help="choose KEY (e.g. lr) per setting on --on")
    parser.add_argument("--on", default=None, help="validation metric of --tune (default: the first val/ metric)")
    parser.add_argument("--print-best", action="store_true", help="--tune: print the choice, write nothing")
    args = parser.parse_args(argv)
    if args.print_best and not args.tune:
        parser.error("--print-best needs --tune KEY")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    folder = Path(args.folder)
    rows = collect(folder)
    shown = metric_columns(rows)
    swept = swept_keys(rows)
    groups = aggregate(rows, swept, shown)
    tables = {"report/runs": run_table(rows, swept, shown), "report/seeds": seed_table(groups, swept, shown)}
    choices, tuned = None, None
    if args.tune:
        on = args.on or next((k for k in shown if k.startswith("val/")), None)
        if on is None:
            raise SystemExit(f"--tune {args.tune}: no val/ metric in the runs (found {shown}); name one with --on")
        try:
            choices = tune(rows, swept, args.tune, on)
        except ValueError as err:
            raise SystemExit(str(err)) from None
        if args.print_best:
            others = [k for k in swept if k not in (args.tune, "seed")]
            for c in choices:
                print(" ".join([f"{k}={c[k]}" for k in others] + [str(c[args.tune])]))
            return 0
    text = to_markdown(rows, shown, swept)
    if choices:
        tuned = tuned_groups(rows, swept, args.tune, choices, shown)
        tables["report/tuned"] = tuned_table(tuned, swept, shown)
        text += _tuned_text(choices, args.tune, tables["report/tuned"])
        write_json(folder / "tuned.json", {"choices": choices, "results": tuned})
    atomic_write_text(folder / "report.md", text)
    print(text)
    failed = [r for r in rows if r["status"] != "finished"]
    if failed:
        print(
            f"{len(failed)} of {len(rows)} runs have no result: "
            + "; ".join(f"{r['run']}: {r['status']} ({r['error']})" for r in failed)
        )
    plots = []
    if shown:
        metric = args.metric or next((k for k in shown if k.startswith("test/")), shown[0])
        if not any(metric in g for g in groups):
            raise SystemExit(f"metric {metric!r} is in no finished run; found: {shown}")
        try:
            x, lines = axis(swept, args.x)
        except ValueError as err:
            raise SystemExit(str(err)) from None
        plots.append(plot(groups, metric, x, lines, folder / "report.png"))
        if "method" in swept:
            plots.append(plot_params(tuned or groups, metric, folder / "report_params.png"))
    print(f"wrote {folder / 'report.md'}" + "".join(f" and {p}" for p in plots))
    if args.wandb:
        log_to_wandb(rows, folder, tables, plots, args.project)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
