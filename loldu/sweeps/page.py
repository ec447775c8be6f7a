"""The page of a sweep (``python -m loldu.report <sweep> [<sweep> ...] --html``): one self-contained HTML file that
opens offline by double-click, with plotly's JavaScript written into it.

What it shows, for the runs :mod:`loldu.sweeps.runs` read (several sweep folders merge into one page):

- the run table, the same rows and values as ``report.csv`` (each cell keeps the exact value in ``data-value``;
  a click on a column's header sorts by it);
- per model and task (a metric is only comparable within one): the metric against trainable parameters on a log
  axis, one line per method, mean and standard deviation over seeds (the paper's Figure 1), and the Pareto fronts
  of the metric against trainable parameters, peak memory, step time and adapter size: the settings no other
  setting beats on both axes are marked and joined, the dominated ones greyed;
- learning curves of every run that kept its CSV log (``csv/metrics.csv``);
- the jobs without a result (failed, unfinished, skipped) with their error.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

from loldu.sweeps.plots import facets

#: Axes of the Pareto fronts: (group key, axis title, log axis); each is a cost, smaller is better.
COSTS = (
    ("trainable", "trainable parameters (incl. head)", True),
    ("peak_mem_mib", "peak memory (MiB)", False),
    ("step_s", "step time (s, median)", False),
    ("adapter_bytes", "adapter size on disk (bytes)", True),
)
GREY = "rgba(150, 150, 150, 0.55)"


def pareto_front(points: list[tuple[float, float]], maximize: bool = True) -> list[int]:
    """Indices of the points that no other point dominates, for a cost ``x`` (smaller is better) and a metric
    ``y`` (larger is better when ``maximize``): a point is dominated when another has ``x`` no larger and ``y``
    no worse, one of them strictly. Points with a non-finite coordinate are never on the front."""
    sign = 1.0 if maximize else -1.0
    finite = [i for i, (x, y) in enumerate(points) if math.isfinite(x) and math.isfinite(y)]
    front = []
    for i in finite:
        xi, yi = points[i][0], sign * points[i][1]
        dominated = any(
            points[j][0] <= xi and sign * points[j][1] >= yi and (points[j][0] < xi or sign * points[j][1] > yi)
            for j in finite
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _label(group: dict, keys: list[str]) -> str:
    """A setting's name: method and rank, then the other keys that tell settings apart."""
    parts = [str(group.get("method"))]
    if group.get("rank") is not None and "rank" not in keys:
        parts.append(f"r{group['rank']}")
    parts += [f"{k}={group.get(k)}" for k in keys if k not in ("method", "model", "task")]
    return " ".join(parts)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def figure1(groups: list[dict], metric: str, title: str):
    """The metric (mean +- std over seeds) against trainable parameters, log axis, one line per method."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for method in sorted({str(g.get("method")) for g in groups}):
        pts = sorted(
            (g for g in groups if str(g.get("method")) == method and metric in g and _finite(g.get("trainable"))),
            key=lambda g: g["trainable"],
        )
        if not pts:
            continue
        fig.add_trace(
            go.Scatter(
                x=[g["trainable"] for g in pts],
                y=[g[metric][0] for g in pts],
                error_y={"type": "data", "array": [g[metric][1] for g in pts], "visible": True},
                mode="lines+markers",
                name=method,
                text=[f"r={g.get('rank')} n={g['n']} seeds {g['seeds']}" for g in pts],
                hovertemplate="%{x:,} params<br>%{y:.4g} ± %{error_y.array:.2g}<br>%{text}<extra>"
                + method
                + "</extra>",
            )
        )
    fig.update_layout(
        title=title,
        xaxis={"type": "log", "title": "trainable parameters (incl. head)"},
        yaxis={"title": f"{metric} (mean ± std over seeds)"},
        height=420,
        margin={"t": 50, "l": 60, "r": 20, "b": 50},
    )
    return fig


def pareto_figure(groups: list[dict], metric: str, keys: list[str], title: str) -> tuple[object, list[str]]:
    """The metric against each cost of :data:`COSTS`, front marked and joined, dominated settings greyed; and one
    note per cost that some settings lack (records from before it was written)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    maximize = not metric.endswith("loss")
    kinds = sorted({k for g in groups for k in str(g.get("peak_mem_kind") or "").split(",") if k})
    titles = [f"{name} [{', '.join(kinds)}]" if key == "peak_mem_mib" and kinds else name for key, name, _ in COSTS]
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, horizontal_spacing=0.1, vertical_spacing=0.18)
    notes = []
    for n, (key, name, log) in enumerate(COSTS):
        row, col = n // 2 + 1, n % 2 + 1
        have = [g for g in groups if metric in g and _finite(g.get(key)) and _finite(g[metric][0])]
        missing = sum(1 for g in groups if metric in g) - len(have)
        if missing:
            notes.append(f"{name}: {missing} setting(s) have no record of it (runs from before it was recorded)")
        if not have:  # an empty trace keeps the panel's axes (plotly.js drops a subplot without one)
            fig.add_trace(go.Scatter(x=[], y=[], showlegend=False, hoverinfo="skip"), row=row, col=col)
            fig.add_annotation(
                text="not recorded by these runs",
                showarrow=False,
                x=0.5,
                y=0.5,
                xref=f"x{n + 1 if n else ''} domain",  # the subplot's own axes
                yref=f"y{n + 1 if n else ''} domain",
            )
        points = [(float(g[key]), float(g[metric][0])) for g in have]
        front = set(pareto_front(points, maximize))
        for on_front in (False, True):
            idx = sorted((i for i in range(len(have)) if (i in front) == on_front), key=lambda i: points[i][0])
            if not idx:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[points[i][0] for i in idx],
                    y=[points[i][1] for i in idx],
                    error_y={"type": "data", "array": [have[i][metric][1] for i in idx], "visible": True},
                    mode="lines+markers+text" if on_front else "markers",
                    textposition="top center",
                    textfont={"size": 10},
                    line={"shape": "hv", "color": "#d62728"} if on_front else None,
                    marker={"color": "#d62728" if on_front else GREY, "size": 9 if on_front else 7},
                    text=[_label(have[i], []) for i in idx] if on_front else None,  # method and rank beside it
                    customdata=[_label(have[i], keys) for i in idx],
                    hovertemplate="%{customdata}<br>" + name + " %{x:,.4g}<br>" + metric + " %{y:.4g}<extra></extra>",
                    name="Pareto front" if on_front else "dominated",
                    legendgroup="front" if on_front else "dominated",
                    showlegend=n == 0,
                ),
                row=row,
                col=col,
            )
        fig.update_xaxes(type="log" if log else "linear", row=row, col=col)
        fig.update_yaxes(title_text=metric if col == 1 else None, row=row, col=col)
    better = "higher" if maximize else "lower"
    fig.update_layout(
        title=f"{title}: Pareto fronts ({metric}, {better} is better; every cost: lower is better)",
        height=720,
        margin={"t": 80, "l": 60, "r": 20, "b": 40},
    )
    return fig, notes


def read_curves(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """``metric -> [(step, value), ...]`` of a run's ``csv/metrics.csv`` (Lightning's CSVLogger); empty without
    one. Only the loss and metric columns (``train/``, ``val/``), not timings or learning rates; a metric logged per
    step and per epoch keeps its per-step curve under its plain name (``train/loss``)."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return {}
    curves: dict[str, list[tuple[float, float]]] = {}
    with path.open(newline="") as f:
        for line in csv.DictReader(f):
            try:
                step = float(line.get("step") or "nan")
            except ValueError:
                continue
            for key, text in line.items():
                if not key or not key.startswith(("train/", "val/")) or not text:
                    continue
                try:
                    curves.setdefault(key, []).append((step, float(text)))
                except ValueError:
                    continue
    # a metric logged per step and per epoch (train/loss_step, train/loss_epoch): its per-step curve, named plainly
    for key in [k for k in curves if k.endswith("_step")]:
        curves[key[: -len("_step")]] = curves.pop(key)
        curves.pop(key[: -len("_step")] + "_epoch", None)
    return curves


def curves_figure(curves: dict[str, dict[str, list[tuple[float, float]]]], metric: str):
    """One panel per metric (the training loss and each validation metric), one line per run."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = sorted({k for c in curves.values() for k in c}, key=lambda k: (k != "train/loss", k != metric, k))
    names = names[:4]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    for col, name in enumerate(names, start=1):
        for run, found in curves.items():
            if name in found:
                steps, values = zip(*found[name], strict=True)
                fig.add_trace(
                    go.Scatter(x=steps, y=values, mode="lines+markers", name=run, legendgroup=run, showlegend=col == 1),
                    row=1,
                    col=col,
                )
        fig.update_xaxes(title_text="step", row=1, col=col)
    fig.update_layout(title="Learning curves", height=420, margin={"t": 70, "l": 60, "r": 20, "b": 50})
    return fig


def _display(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def table_html(header: list[str], rows: list[list[str]], shown: list[str]) -> str:
    """The run table: ``rows`` are report.csv's cells as written (the exact values, kept in ``data-value``); a
    cell shows numbers to 4 significant digits."""
    head = "".join(
        f'<th data-col="{i}" title="sort by {html.escape(h)}">{html.escape(h)}</th>' for i, h in enumerate(header)
    )
    body = []
    for cells, values in rows:
        status = html.escape(str(values[1])) if len(values) > 1 else ""
        tds = "".join(
            f'<td data-value="{html.escape(text)}">{html.escape(_display(value))}</td>'
            for text, value in zip(cells, values, strict=True)
        )
        body.append(f'<tr class="status-{status}">{tds}</tr>')
    return (
        f'<table id="runs" class="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
        f'<p class="hint">{len(rows)} runs; click a column header to sort. '
        f"Metrics shown: {html.escape(', '.join(shown))}.</p>"
    )


SORT_SCRIPT = """
document.querySelectorAll('#runs th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], col = +th.dataset.col;
    var asc = th.dataset.order !== 'asc';
    table.querySelectorAll('th').forEach(function (h) { delete h.dataset.order; });
    th.dataset.order = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    function key(row) {
      var text = row.cells[col].dataset.value, num = parseFloat(text);
      return text !== '' && isFinite(num) && String(num) !== 'NaN' && /^[-+0-9.eE]+$/.test(text) ? num : text;
    }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (typeof x === 'number' && typeof y === 'number') { return asc ? x - y : y - x; }
      if (typeof x === 'number') { return -1; }
      if (typeof y === 'number') { return 1; }
      return asc ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 1.6em; } h3 { font-size: 1.05em; }
table.runs { border-collapse: collapse; font-size: 12px; }
table.gaps { border-collapse: collapse; font-size: 13px; } table.gaps td, table.gaps th { border: 1px solid #ddd;
  padding: 2px 6px; } table.gaps tr.separable td:last-child { font-weight: bold; }
table.runs th { background: #eee; cursor: pointer; position: sticky; top: 0; }
table.runs th[data-order="asc"]::after { content: " \\25B2"; }
table.runs th[data-order="desc"]::after { content: " \\25BC"; }
table.runs td, table.runs th { border: 1px solid #ccc; padding: 2px 6px; white-space: nowrap; }
.tablewrap { max-height: 32em; overflow: auto; }
tr.status-failed, tr.status-unfinished { background: #fde2e2; } tr.status-skipped { background: #f3f3f3; }
.hint, .note { color: #555; font-size: 0.9em; }
"""


def write_page(
    path: Path,
    *,
    title: str,
    sources: list[str],
    rows: list[dict],
    groups: list[dict],
    keys: list[str],
    metric: str | None,
    table: tuple[list[str], list[list[str]], list[list]],
    shown: list[str],
    run_dirs: dict[str, Path],
    gaps: list[dict] | None = None,
) -> Path:
    """Write the page to ``path`` (atomically) and return it.

    Args:
        title: the page's heading.
        sources: the sweep folders read.
        rows: the runs (:func:`loldu.sweeps.runs.collect`), for the list of jobs without a result.
        groups: the settings over seeds (:func:`loldu.sweeps.plots.aggregate`, or the tuned ones).
        keys: the swept keys that tell settings apart (seed excluded).
        metric: the metric of the plots (None: no finished run has one; the page has the table only).
        table: report.csv's header, its cells as written, and the values behind them.
        shown: the metric columns of the table.
        run_dirs: run name -> folder, for the learning curves.
        gaps: paired gaps against a reference setting (:func:`loldu.sweeps.compare.paired_gaps`), shown per model
            and task under its plots; None: no such table.
    """
    import plotly.io as pio

    from loldu.run.folder import atomic_write_text

    parts, first = [], True

    def plot_html(fig) -> str:
        nonlocal first
        out = pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=first,  # the library once, inline: the page needs no network
            config={"displaylogo": False, "responsive": True},
        )
        first = False
        return out

    header, cells, values = table
    parts.append(f"<h1>{html.escape(title)}</h1>")
    listed = "".join(f"<li><code>{html.escape(s)}</code></li>" for s in sources)
    parts.append(
        f'<p class="note">{len(rows)} runs, {sum(r["status"] == "finished" for r in rows)} finished, {len(groups)} '
        f"settings over seeds; the run table has the same rows and values as report.csv.</p>"
        f'<details class="note"><summary>{len(sources)} sweep folder(s)</summary><ul>{listed}</ul></details>'
    )
    if metric is not None:
        for (model, task), members in sorted(facets(groups).items()):
            facet = f"{model} × {task}"
            parts.append(f"<h2>{html.escape(facet)}</h2>")
            if any(_finite(g.get("trainable")) for g in members):
                parts.append(plot_html(figure1(members, metric, f"{facet}: {metric} against trainable parameters")))
            fig, notes = pareto_figure(members, metric, keys, facet)
            parts.append(plot_html(fig))
            parts += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
            here = [g for g in gaps or [] if (str(g["model"]), str(g["task"])) == (model, task)]
            if here:
                parts.append(gaps_html(here))
    parts.append("<h2>Runs</h2>")
    parts.append(f'<div class="tablewrap">{table_html(header, list(zip(cells, values, strict=True)), shown)}</div>')
    curves = {name: c for name, d in run_dirs.items() if (c := read_curves(d))}
    parts.append("<h2>Learning curves</h2>")
    if curves:
        parts.append(plot_html(curves_figure(curves, metric.replace("test/", "val/") if metric else "val/loss")))
    else:
        parts.append('<p class="note">No run kept its CSV log (csv/metrics.csv): logger=csv or wandb writes it.</p>')
    failed = [r for r in rows if r["status"] != "finished"]
    parts.append(f"<h2>Jobs without a result ({len(failed)})</h2>")
    if failed:
        items = "".join(
            f"<li><code>{html.escape(r['run'])}</code>: {html.escape(r['status'])}"
            f"{': ' + html.escape(str(r['error'])) if r.get('error') else ''}</li>"
            for r in failed
        )
        parts.append(f'<ul id="failed">{items}</ul>')
    else:
        parts.append('<p id="failed" class="note">none</p>')
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(parts)
        + f"<script>{SORT_SCRIPT}</script>"
        + f'<script type="application/json" id="report-data">{_json_script(header, cells)}</script>'
        + "</body></html>\n"
    )
    atomic_write_text(path, page)
    return path


def gaps_html(gaps: list[dict]) -> str:
    """A facet's paired gaps as a table: setting, reference, paired seeds, gap with its 95% interval; a gap whose
    interval excludes 0 is marked (class ``separable``)."""
    head = "<tr><th>setting</th><th>reference</th><th>seeds</th><th>gap [95% interval]</th></tr>"
    body = "".join(
        f'<tr class="{"separable" if g["separable"] else "not-separable"}"><td>{html.escape(g["setting"])}</td>'
        f"<td>{html.escape(g['reference'])}</td><td>{html.escape(','.join(map(str, g['seeds'])) or '-')}</td>"
        f"<td>{html.escape(g['text'])}</td></tr>"
        for g in gaps
    )
    note = (
        f"Paired gaps on {gaps[0]['metric']}: each setting minus the reference over the seeds both ran, with a "
        "95% t-interval; * marks an interval that excludes 0 (the data separate the two)."
    )
    return f'<p class="note">{html.escape(note)}</p><table class="gaps">{head}{body}</table>'


def _json_script(header: list[str], cells: list[list[str]]) -> str:
    """report.csv's content as JSON inside the page (for tools that read the page), safe inside a script tag."""
    return json.dumps({"columns": header, "rows": cells}).replace("</", "<\\/")
