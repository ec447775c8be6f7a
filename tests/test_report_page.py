"""The sweep page (``python -m loldu.report <sweep> --html``) and report.csv: Pareto fronts, the same numbers as
report.csv, merged sweeps, a real train.py sweep's records; and in a real headless Chromium (``browser`` tests):
no console error, no network request, the table, plots and sorting equal report.csv."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, TRAIN_ENV

from loldu.sweeps.page import pareto_front, read_curves
from loldu.sweeps.report import main as report

PARAMS = {"adapter": 100, "head": 66, "base": 10_000}


# -- hand-made sweeps ------------------------------------------------------------------------------------------------
def _job(folder: Path, num: int, method: str, rank: int, seed: int, acc: float, failed: str | None = None) -> None:
    run = folder / str(num)
    (run / ".hydra").mkdir(parents=True)
    overrides = [f"method={method}", f"rank={rank}", f"seed={seed}"]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    cfg = {"lr": 0.003, "seed": seed, "epochs": 1, "method": {"name": method, "r": rank}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    if failed:
        (run / "status.json").write_text(json.dumps({"status": "failed", "error": failed, "pid": 1}))
        return
    adapter = rank * (12 if method == "lora" else 1)
    metrics = {
        "test": {"test/acc": acc, "test/loss": 1 - acc},
        "val": {"val/acc": acc - 0.01},
        "params": {**PARAMS, "adapter": adapter, "trainable": adapter + 66},
        "adapter_bytes": 4 * adapter + 48,
        "perf": {
            "step_time_s": 0.1 + 0.001 * rank,
            "step_time_iqr_s": 0.01,
            "steps": 20,
            "peak_mem_mib": 500.0 + rank * (3 if method == "lora" else 1),
            "peak_mem_kind": "cpu_max_rss",
        },
        "device": {"accelerator": "cpu", "name": "Test CPU", "count": 1},
        "git": {"commit": "a" * 40, "dirty": False},
        "versions": {"torch": "2.15.0", "peft": "0.21.2"},
        "model": "minilm",
        "task": "rotten_tomatoes",
        "method": method,
        "rank": rank,
        "lr": 0.003,
        "seed": seed,
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "status.json").write_text(json.dumps({"status": "finished", "error": None, "pid": 1}))
    (run / "csv").mkdir()
    lines = ["step,epoch,train/loss,val/acc,val/loss"]
    lines += [f"{s},0,{1.0 / (s + 1)},,\n{s},0,,{acc - 0.2 / (s + 1)},{0.5 / (s + 1)}" for s in range(0, 20, 5)]
    (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")


def _sweep(folder: Path, methods=("loldu", "lora"), ranks=(8, 64), seeds=(0, 1), failed=True) -> Path:
    num = 0
    for method in methods:
        for rank in ranks:
            for seed in seeds:
                acc = 0.6 + 0.001 * rank + (0.05 if method == "lora" else 0.0) + 0.01 * seed
                _job(folder, num, method, rank, seed, acc)
                num += 1
    if failed:
        _job(folder, num, "loldu", 16, 0, 0.0, failed="RuntimeError: CUDA out of memory")
    return folder


def _csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        header, *cells = list(csv.reader(f))
    return header, cells


class _Table(HTMLParser):
    """The run table's cells (data-value and shown text) and the embedded report data of a page."""

    def __init__(self):
        super().__init__()
        self.rows, self.header, self._in, self._cell, self.data, self._script = [], [], None, None, "", False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "runs":
            self._in = "table"
        elif self._in and tag == "tr":
            self.rows.append([])
        elif self._in and tag == "td":
            self._cell = [attrs.get("data-value"), ""]
        elif self._in and tag == "th":
            self._cell = [None, ""]
        elif tag == "script" and attrs.get("id") == "report-data":
            self._script = True

    def handle_endtag(self, tag):
        if tag == "table":
            self._in = None
        elif tag in ("td", "th") and self._cell is not None:
            (self.rows[-1] if tag == "td" else self.header).append(tuple(self._cell) if tag == "td" else self._cell[1])
            self._cell = None
        elif tag == "script":
            self._script = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data
        if self._script:
            self.data += data


def _page_table(path: Path) -> _Table:
    parser = _Table()
    parser.feed(path.read_text())
    parser.rows = [r for r in parser.rows if r]
    return parser


def _shown_equals(shown: str, exact: str) -> bool:
    """A cell's text shows the exact value of report.csv (numbers to 4 significant digits)."""
    if exact in ("", "true", "false") or not _is_number(exact):
        return shown == exact
    if exact.lower() == "nan":
        return shown == "nan"
    return math.isclose(float(shown.replace(",", "")), float(exact), rel_tol=5e-4, abs_tol=1e-12)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- Pareto fronts ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "points,maximize,front",
    [
        ([(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.9)], True, [0, 1, 3]),  # (3, 0.6) is beaten by (2, 0.7)
        ([(1, 0.5), (1, 0.6)], True, [1]),  # same cost, better metric
        ([(1, 0.5), (1, 0.5)], True, [0, 1]),  # equal points dominate neither
        ([(1, 0.5), (2, 0.4), (3, 0.3)], False, [0, 1, 2]),  # a loss: lower is better
        ([(1, 0.5), (2, 0.4), (3, 0.3)], True, [0]),
        ([(1, math.nan), (2, 0.4), (math.inf, 0.9)], True, [1]),  # non-finite points are never on a front
    ],
)
def test_pareto_front(points, maximize, front):
    assert pareto_front(points, maximize) == front


# -- report.csv and the page -----------------------------------------------------------------------------------------
def test_page_table_and_embedded_data_equal_report_csv(tmp_path):
    sweep = _sweep(tmp_path / "sweep")
    assert report([str(sweep), "--html"]) == 0
    header, cells = _csv(sweep / "report.csv")
    for column in ("adapter_bytes", "peak_mem_mib", "peak_mem_kind", "step_iqr_s", "device", "git_commit", "error"):
        assert column in header
    page = _page_table(sweep / "report.html")
    assert page.header == header
    assert [[v for v, _ in row] for row in page.rows] == cells
    for row in page.rows:
        for value, shown in row:
            assert _shown_equals(shown.strip(), value), (shown, value)
    assert json.loads(page.data) == {"columns": header, "rows": cells}
    by_run = {c[0]: dict(zip(header, c, strict=True)) for c in cells}
    assert by_run["0"]["adapter_bytes"] == str(4 * 8 + 48) and by_run["0"]["peak_mem_kind"] == "cpu_max_rss"
    assert by_run["8"]["status"] == "failed" and "out of memory" in by_run["8"]["error"]
    text = (sweep / "report.html").read_text()
    assert "CUDA out of memory" in text.split("Jobs without a result")[1]
    assert "Pareto front" in text and "Learning curves" in text and "<script src=" not in text


def test_merged_sweeps_one_page_keyed_by_model_task_method_rank(tmp_path):
    a = _sweep(tmp_path / "a", methods=("loldu",), failed=False)
    b = _sweep(tmp_path / "b", methods=("lora",), failed=False)
    with pytest.raises(SystemExit):  # where a merged report goes must be said
        report([str(a), str(b), "--html"])
    out = tmp_path / "both"
    assert report([str(a), str(b), "--html", "--out", str(out)]) == 0
    header, cells = _csv(out / "report.csv")
    runs = [c[header.index("run")] for c in cells]
    assert runs[:2] == ["a/0", "a/1"] and runs[-1] == f"b/{len(runs) // 2 - 1}"
    assert {c[header.index("sweep_dir")] for c in cells} == {"a", "b"}
    text = (out / "report.html").read_text()
    assert text.count("minilm × rotten_tomatoes</h2>") == 1  # one facet: both sweeps' settings side by side
    assert not (a / "report.html").exists() and not (b / "report.csv").exists()


def test_real_sweep_records_reach_report_csv_and_page(tmp_path):
    """A real two-job sweep of train.py: its metrics.json records (adapter bytes on disk, peak memory and its kind,
    step time spread, device, commit, versions) reach report.csv, and the page draws its learning curves."""
    cmd = [sys.executable, "train.py", "-m", "model=tiny_bert", "debug=fast", "logger=csv", "callbacks=none"]
    out = subprocess.run(
        [*cmd, "rank=4,16", f"hydra.sweep.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, env=TRAIN_ENV
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rep = subprocess.run(
        [sys.executable, "-m", "loldu.report", str(tmp_path), "--html"], cwd=ROOT, capture_output=True, text=True
    )
    assert rep.returncode == 0, rep.stderr[-3000:]
    header, cells = _csv(tmp_path / "report.csv")
    rows = [dict(zip(header, c, strict=True)) for c in cells]
    assert [r["rank"] for r in rows] == ["4", "16"] and {r["status"] for r in rows} == {"finished"}
    for r in rows:
        weights = sum(p.stat().st_size for p in (tmp_path / r["run"] / "adapter").glob("*.safetensors"))
        assert int(r["adapter_bytes"]) == weights > 0
        assert r["peak_mem_kind"] == "cpu_max_rss" and float(r["peak_mem_mib"]) > 0
        assert float(r["step_iqr_s"]) >= 0 and r["device"] and "torch" in r["versions"]
    assert int(rows[1]["adapter_bytes"]) > int(rows[0]["adapter_bytes"])  # rank 16 stores more than rank 4
    table = (tmp_path / "report.md").read_text()
    assert table.count("| tiny_bert | rotten_tomatoes | loldu |") == 2 and "test/acc" in table
    text = (tmp_path / "report.html").read_text()
    assert "No run kept its CSV log" not in text
    curves = read_curves(tmp_path / "0")
    assert len(curves["train/loss"]) >= 2 and "train/loss_epoch" not in curves and curves["val/acc"]


# -- in a real browser -----------------------------------------------------------------------------------------------
def _chromium() -> str | None:
    """A Chromium to drive: $CHROMIUM, Debian's (make browser) or Google's on the PATH, else playwright's own."""
    found = os.environ.get("CHROMIUM") or next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None
    )
    if found:
        return found
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            path = p.chromium.executable_path
        return path if Path(path).is_file() else None
    except Exception:
        return None


@pytest.fixture(scope="module")
def browser():
    path = _chromium()
    if path is None:
        pytest.skip("no Chromium found: `make browser` installs Debian's (or set CHROMIUM=/path/to/chrome)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chrome = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield chrome
        chrome.close()


def _open(browser, path: Path):
    """The page at ``path`` opened in a fresh context, with what it logged and requested."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    seen = {"console": [], "errors": [], "requests": []}
    page.on("console", lambda m: seen["console"].append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else 0)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.goto(path.resolve().as_uri(), wait_until="load")
    page.wait_for_function("document.querySelectorAll('.plotly-graph-div .main-svg').length > 0")
    return page, seen


PLOTS_JS = """() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => ({
  title: (d.layout.title && d.layout.title.text) || '',
  traces: d.data.map(t => ({name: t.name, xaxis: t.xaxis || 'x', x: Array.from(t.x || []), y: Array.from(t.y || [])})),
  svg: d.querySelectorAll('.main-svg').length}))"""


@pytest.mark.browser
def test_page_in_headless_chromium(tmp_path, browser):
    sweep = _sweep(tmp_path / "sweep")
    assert report([str(sweep), "--html"]) == 0
    header, cells = _csv(sweep / "report.csv")
    page, seen = _open(browser, sweep / "report.html")
    try:
        assert seen["console"] == [] and seen["errors"] == []
        assert seen["requests"] == [(sweep / "report.html").resolve().as_uri()], "the page fetched something"
        dom = page.eval_on_selector_all(
            "#runs tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.dataset.value))"
        )
        assert dom == cells
        plots = page.evaluate(PLOTS_JS)
        assert plots and all(p["svg"] > 0 for p in plots)  # every figure drawn
        # Figure 1: each method's points are its settings' seed means of test/acc in report.csv
        rows = [dict(zip(header, c, strict=True)) for c in cells if c[header.index("status")] == "finished"]
        means = {}
        for r in rows:
            means.setdefault((r["method"], int(r["trainable"])), []).append(float(r["test/acc"]))
        (fig1,) = [p for p in plots if "against trainable parameters" in p["title"]]
        drawn = {(t["name"], int(x)): y for t in fig1["traces"] for x, y in zip(t["x"], t["y"], strict=True)}
        assert drawn.keys() == means.keys()
        for key, y in drawn.items():
            assert y == pytest.approx(statistics.fmean(means[key]))
        # the front against trainable parameters is the one computed from report.csv's numbers
        (pareto,) = [p for p in plots if "Pareto" in p["title"]]
        settings = sorted(
            {(int(r["trainable"]), statistics.fmean(means[(r["method"], int(r["trainable"]))])) for r in rows}
        )
        expected = [settings[i] for i in pareto_front(settings)]
        (front,) = [t for t in pareto["traces"] if t["name"] == "Pareto front" and t["xaxis"] == "x"]
        assert front["x"] == [x for x, _ in expected] and front["y"] == pytest.approx([y for _, y in expected])
        greyed = [t for t in pareto["traces"] if t["name"] == "dominated" and t["xaxis"] == "x"]
        assert sum(len(t["x"]) for t in greyed) == len(settings) - len(expected)
        # sorting: a click on test/acc orders the rows by it, a second click reverses
        column = header.index("test/acc")
        page.click(f"#runs th[data-col='{column}']")
        values = page.eval_on_selector_all("#runs tbody tr", f"rows => rows.map(r => r.cells[{column}].dataset.value)")
        numbers = [float(v) for v in values if v]
        assert numbers == sorted(numbers) and values[len(numbers) :] == [""] * (len(values) - len(numbers))
        page.click(f"#runs th[data-col='{column}']")
        again = page.eval_on_selector_all("#runs tbody tr", f"rows => rows.map(r => r.cells[{column}].dataset.value)")
        assert [float(v) for v in again if v] == sorted(numbers, reverse=True)
        assert "CUDA out of memory" in page.inner_text("#failed")
        assert seen["console"] == [] and seen["errors"] == []
    finally:
        page.context.close()


@pytest.mark.browser
def test_merged_page_in_headless_chromium(tmp_path, browser):
    a = _sweep(tmp_path / "runs" / "a", methods=("loldu",), failed=False)
    b = _sweep(tmp_path / "runs" / "b", methods=("lora",), failed=False)
    assert report([str(a), str(b), "--html", "--out", str(tmp_path / "runs")]) == 0
    page, seen = _open(browser, tmp_path / "runs" / "report.html")
    try:
        assert seen["console"] == [] and seen["errors"] == [] and len(seen["requests"]) == 1
        (fig1,) = [p for p in page.evaluate(PLOTS_JS) if "against trainable parameters" in p["title"]]
        assert sorted(t["name"] for t in fig1["traces"]) == ["loldu", "lora"]
    finally:
        page.context.close()


@pytest.mark.browser
def test_a_network_request_or_script_error_is_caught(tmp_path, browser):
    """The checks above can fail: a page that loads a script from the network, or throws, is seen doing so."""
    sweep = _sweep(tmp_path / "sweep", failed=False)
    assert report([str(sweep), "--html"]) == 0
    path = sweep / "report.html"
    path.write_text(
        path.read_text().replace(
            "</body>", '<script src="http://127.0.0.1:9/plotly.js"></script><script>undefinedCall()</script></body>'
        )
    )
    page, seen = _open(browser, path)
    try:
        assert "http://127.0.0.1:9/plotly.js" in seen["requests"]
        assert any("undefinedCall" in e for e in seen["errors"])
    finally:
        page.context.close()
