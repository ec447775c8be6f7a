"""Collect the runs of a sweep into markdown tables and a plot whose x-axis is what the sweep varied.

    python -m loldu.report multirun/2026-11-23/12-00-00 [--metric test/acc] [--wandb]
    python -m loldu.report <folder of grid and seed runs> --tune lr [--on val/acc] [--print-best]
    python -m loldu.report <folders> --out <report folder> --tune lr --vs method=lora [--html]
    make report DIR=multirun/2026-11-23/12-00-00 ARGS=--wandb

Reads every run folder below the folder (``config.yaml``, ``metrics.json``, ``status.json`` and Hydra's
``.hydra/overrides.yaml``, see :mod:`loldu.sweeps.runs`), writes ``report.md`` (one row per run, failed and
unfinished ones with their error, then the settings averaged over seeds; with ``--tune lr``, the lr chosen on a
validation metric for each setting and the results there, also in ``tuned.json``, see :mod:`loldu.sweeps.tune`;
with ``--vs``, every setting's paired gap to a reference setting with its 95% interval, also in ``gaps.json``, see
:mod:`loldu.sweeps.compare`)
and ``report.png`` (see
:mod:`loldu.sweeps.plots`; method comparisons also ``report_params.png``) into it, prints the tables, and with
``--wandb`` logs them and the plots to W&B, in the sweep's group of the project its runs logged to.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os
from pathlib import Path

from loldu.run.folder import atomic_write_text, write_json
from loldu.sweeps.compare import gaps_table, paired_gaps, parse_reference
from loldu.sweeps.plots import aggregate, axis, plot, plot_params
from loldu.sweeps.runs import FIELDS, RECORD_COLUMNS, RESULT_PREFIXES, collect, swept_keys, value
from loldu.sweeps.tune import key_parts, tune, tuned_groups

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


def csv_table(rows: list[dict], swept: list[str], metrics: list[str]) -> tuple[list[str], list[list]]:
    """Header and values of report.csv: the per-run table's columns, then what each run recorded about how it ran
    (:data:`loldu.sweeps.runs.RECORD_COLUMNS`), the sweep folder of a merged report last."""
    header, values = run_table(rows, swept, metrics)
    extra = [k for k in RECORD_COLUMNS if k not in header]
    if any("sweep_dir" in r for r in rows):
        extra.append("sweep_dir")
    header = header[:-1] + extra + header[-1:]  # error stays last
    return header, [v[:-1] + [r.get(k) for k in extra] + v[-1:] for r, v in zip(rows, values, strict=True)]


def csv_text(value) -> str:
    """A value as report.csv writes it: numbers exactly (``repr``), None empty, booleans ``true``/``false``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_csv(path: Path, header: list[str], values: list[list]) -> list[list[str]]:
    """Write report.csv; returns its cells as written (the page shows the same)."""
    cells = [[csv_text(v) for v in row] for row in values]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(cells)
    atomic_write_text(path, out.getvalue())
    return cells


def to_markdown(rows: list[dict], metrics: list[str], swept: list[str] | None = None) -> str:
    """The per-run table, then (several runs) the seed-averaged one."""
    swept = swept_keys(rows) if swept is None else swept
    text = _table(*run_table(rows, swept, metrics))
    if len(rows) > 1:
        text += "\nMean ± std over seeds (finished runs):\n\n" + _table(
            *seed_table(aggregate(rows, swept, metrics), swept, metrics)
        )
    return text


def log_to_wandb(rows: list[dict], folder: Path, tables: dict, plots: list[Path], project: str | None) -> None:
    """Log the tables and plots as one W&B run of ``job_type="report"`` in the sweep's group."""
    import wandb

    from loldu.sweeps.dashboard import sweep_target  # imports wandb_workspaces: only here

    target = sweep_target(rows, folder, project)
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


def collect_all(folders: list[Path]) -> list[dict]:
    """The runs of one sweep folder (:func:`loldu.sweeps.runs.collect`), or of several merged: each run named by its
    sweep folder (relative to their common parent) and its own, with ``sweep_dir`` recorded. Every row's ``dir``
    is its run folder."""
    if len(set(f.resolve() for f in folders)) != len(folders):
        raise SystemExit(f"the same folder twice: {' '.join(map(str, folders))}")
    common = Path(os.path.commonpath([f.resolve() for f in folders]))
    rows = []
    for folder in folders:
        for row in collect(folder):
            row["dir"] = folder / row["run"]
            if len(folders) > 1:
                name = str(folder.resolve().relative_to(common)) if folder.resolve() != common else folder.name
                row["run"] = f"{name}/{row['run']}" if row["run"] != "." else name
                row["sweep_dir"] = name
            rows.append(row)
    return rows


def _groups_of(rows, swept, shown, args, folders) -> tuple[list[dict], list[dict] | None, list[dict] | None]:
    """``(groups over seeds, tuned groups or None, choices or None)``; a merged report tunes each sweep folder on
    its own, with the first of the comma-separated ``--tune`` keys that the folder varies (lr, head_lr, ...)."""
    groups = aggregate(rows, swept, shown)
    if not args.tune:
        return groups, None, None
    keys = [k for k in args.tune.split(",") if k]
    on = args.on or next((k for k in shown if k.startswith("val/")), None)
    if on is None:
        raise SystemExit(f"--tune {args.tune}: no val/ metric in the runs (found {shown}); name one with --on")
    parts = [rows] if len(folders) == 1 else [[r for r in rows if r["sweep_dir"] == d] for d in _sweep_names(rows)]
    choices, tuned = [], []
    for part in parts:
        part_swept = swept_keys(part)
        key = next((k for k in keys if all(p in part_swept for p in key_parts(k))), keys[0])
        try:
            found = tune(part, part_swept, key, on)
        except ValueError as err:
            where = f" ({part[0]['sweep_dir']})" if len(parts) > 1 else ""
            raise SystemExit(f"{err}{where}") from None
        choices += [{**c, "_key": key} for c in found]
        tuned += tuned_groups(part, part_swept, key, found, shown)
    return groups, tuned, choices


def _sweep_names(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["sweep_dir"] for r in rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loldu.report", description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="+", help="a run or multirun folder of train.py; several merge into one report")
    parser.add_argument("--metric", default=None, help="metric to plot (default: the first test/ metric found)")
    parser.add_argument("--html", action="store_true", help="also write report.html, one self-contained page")
    parser.add_argument("--out", default=None, help="folder of the report (default: the sweep folder; merged: --out)")
    parser.add_argument("--wandb", action="store_true", help="also log the tables and plots to W&B")
    parser.add_argument("--project", default=None, help="W&B project for --wandb (default: the runs' project)")
    parser.add_argument("--x", default=None, help="swept key on the plot's x-axis (default: rank, lr, init, ...)")
    parser.add_argument(
        "--tune",
        default=None,
        metavar="KEY",
        help="choose KEY (e.g. lr; jointly: lr+head_lr; merged: the first of lr,head_lr a folder varies) on --on",
    )
    parser.add_argument("--on", default=None, help="validation metric of --tune (default: the first val/ metric)")
    parser.add_argument("--print-best", action="store_true", help="--tune: print the choice, write nothing")
    parser.add_argument(
        "--vs",
        default=None,
        metavar="KEY=VALUE",
        help="paired gaps (95%% intervals over common seeds) of every setting against this one, e.g. method=lora",
    )
    args = parser.parse_args(argv)
    if args.print_best and not args.tune:
        parser.error("--print-best needs --tune KEY")
    try:
        reference = parse_reference(args.vs) if args.vs is not None else None
    except ValueError as err:
        parser.error(str(err))
    folders = [Path(f) for f in args.folder]
    if len(folders) > 1 and args.out is None:
        parser.error("several sweep folders merge into one report: say where it goes with --out <folder>")
    if len(folders) > 1 and (args.print_best or args.wandb):
        parser.error("--print-best and --wandb take one sweep folder")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    folder = Path(args.out) if args.out else folders[0]
    try:
        rows = collect_all(folders)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    shown = metric_columns(rows)
    swept = swept_keys(rows)
    groups, tuned, choices = _groups_of(rows, swept, shown, args, folders)
    tables = {"report/runs": run_table(rows, swept, shown), "report/seeds": seed_table(groups, swept, shown)}
    if args.print_best:
        others = [k for k in swept if k not in (*key_parts(choices[0]["_key"]), "seed")]
        for c in choices:
            print(" ".join([f"{k}={c[k]}" for k in others] + [str(c[c["_key"]])]))
        return 0
    metric = (args.metric or next((k for k in shown if k.startswith("test/")), shown[0])) if shown else None
    gaps = None
    if reference is not None:
        if metric is None:
            raise SystemExit("--vs: no finished run has a metric to compare")
        try:
            gaps = paired_gaps(tuned or groups, rows, reference, [k for k in swept if k != "seed"], metric)
        except ValueError as err:
            raise SystemExit(str(err)) from None
    folder.mkdir(parents=True, exist_ok=True)
    text = to_markdown(rows, shown, swept)
    if choices:
        key = choices[0]["_key"]
        if len({c["_key"] for c in choices}) == 1:
            tables["report/tuned"] = tuned_table(tuned, swept, shown)
            text += _tuned_text(_plain(choices), key, tables["report/tuned"])
        write_json(
            folder / "tuned.json", {"choices": choices if len(folders) > 1 else _plain(choices), "results": tuned}
        )
    if gaps:
        title, gap_header, gap_rows = gaps_table(gaps)
        text += f"\n{title}\n\n" + _table(gap_header, gap_rows)
    if gaps is not None:
        write_json(folder / "gaps.json", {"reference": reference, "gaps": gaps})
    atomic_write_text(folder / "report.md", text)
    header, values = csv_table(rows, swept, shown)
    cells = write_csv(folder / "report.csv", header, values)
    print(text)
    failed = [r for r in rows if r["status"] != "finished"]
    if failed:
        print(
            f"{len(failed)} of {len(rows)} runs have no result: "
            + "; ".join(f"{r['run']}: {r['status']} ({r['error']})" for r in failed)
        )
    plots = []
    if shown:
        if not any(metric in g for g in groups):
            raise SystemExit(f"metric {metric!r} is in no finished run; found: {shown}")
        try:
            x, lines = axis(swept, args.x)
        except ValueError as err:
            raise SystemExit(str(err)) from None
        plots.append(plot(groups, metric, x, lines, folder / "report.png"))
        if "method" in swept or len(folders) > 1:
            plots.append(plot_params(tuned or groups, metric, folder / "report_params.png"))
    written = [folder / "report.md", folder / "report.csv", *plots]
    if args.html:
        table = (header, cells, values)
        written.append(_page(folder, folders, rows, tuned or groups, swept, metric, table, shown, gaps))
    print("wrote " + ", ".join(str(p) for p in written))
    if args.wandb:
        log_to_wandb(rows, folder, tables, plots, args.project)
    return 0


def _plain(choices: list[dict]) -> list[dict]:
    return [{k: v for k, v in c.items() if k != "_key"} for c in choices]


def _page(folder, folders, rows, groups, swept, metric, table, shown, gaps) -> Path:
    from loldu.sweeps.page import write_page

    return write_page(
        folder / "report.html",
        title=f"Report of {folders[0]}" if len(folders) == 1 else f"Report of {len(folders)} sweeps in {folder}",
        sources=[str(f) for f in folders],
        rows=rows,
        groups=groups,
        keys=[k for k in swept if k != "seed"],
        metric=metric,
        table=table,
        shown=shown,
        run_dirs={r["run"]: r["dir"] for r in rows},
        gaps=gaps,
    )


if __name__ == "__main__":
    raise SystemExit(main())
