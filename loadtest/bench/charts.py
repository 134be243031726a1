"""The benchmark as pictures: PNG charts of a result (the content of the JSON ``python -m
loadtest.bench`` writes), two per section that ran (http, smtp, cluster).

- ``STEM-SECTION-throughput.png``: each case's median rate as a horizontal bar, the range of its
  runs as a whisker, and written after it the ratio to each baseline of its panel: hello-world
  with as many workers (http); the direct ceiling, the minimal relay with kept upstream
  connections and Postfix in the same shape (smtp); the single redis-server (cluster). The
  report's tables hold the same numbers; a chart shows at a glance how far each case is from what
  it is measured against, which is what the targets are about.
- ``STEM-SECTION-latency.png``: p50 and p99 of each case that measured them (wrk's for HTTP and
  for the cluster's creation; the latency probe's single messages for SMTP).
- ``STEM-main-throughput.png``, the README's: the main cases alone, where tempalias stands at a
  glance: its HTTP cases against hello-world with the most workers measured, and its forwarding
  (2 KiB, 20 sessions) against the minimal relay and Postfix, without the direct ceiling, whose
  bar would dwarf the rest.

A case the result lacks is not drawn, and no ratio to a baseline the result lacks is written: a
run with ``--only`` or one that stopped half-way still gets charts of what it measured.

Drawn on matplotlib's Agg canvas directly (no display, no pyplot and its global figures).
matplotlib is in setup.py's ``test`` extra, which ``make bench`` installs; the service never
imports it.

STEM is the JSON's name without ``.json``. ``python -m loadtest.bench.charts RESULT.json [OUTDIR]``
draws them from a JSON kept earlier, into OUTDIR (default: the JSON's directory).
"""

from __future__ import annotations

import argparse
import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loadtest.bench.cases import (DIRECT, HELLO_WORLD, MAIN_SHAPE, MINIRELAY_KEPT, POSTFIX,
                                  SINGLE_REDIS)
from loadtest.bench.tools import WRK_CONNECTIONS

UNITS = {"req_per_s": "requests/s", "msg_per_s": "messages/s"}
DPI = 100
WIDTH_INCHES = 11
ROW_INCHES = 0.32  # per bar
PANEL_INCHES = 0.9  # per panel: its title, axis and ticks
LABEL_WIDTH = 48  # characters of a case's name per line
BASELINE_COLOUR = "#9e9e9e"
CASE_COLOUR = "#3b75af"
LATENCY_COLOURS = ("#9cc3e6", "#1f4e79")  # p50, p99


@dataclass(frozen=True)
class Bar:
    series: str  # the legend's name of what the bar shows
    figure: dict[str, float]  # median, min, max over the runs
    text: str  # written after the bar


@dataclass(frozen=True)
class Row:
    label: str
    bars: tuple[Bar, ...]
    baseline: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Group:
    """Cases measured alike, and what their rates are measured against, in order: a baseline's
    own row gets the ratios to the baselines listed before it."""
    title: str
    cases: list[tuple[str, dict]]
    baselines: list[tuple[str, dict | None]]
    latency: tuple[str, str]  # the keys of its p50 and p99
    latency_source: str = ""  # whose latency it is, when not the load tool's own


def _measured(figure: Any) -> bool:
    return isinstance(figure, dict) and isinstance(figure.get("median"), (int, float)) \
        and not math.isnan(figure["median"])


def _rate_key(case: dict) -> str | None:
    return next((key for key in UNITS if _measured(case.get(key))), None)


# --- from the result to the panels


def http_groups(http: dict) -> list[Group]:
    groups = []
    for workers in sorted(http, key=int):  # ints in a run, strings once read back from the JSON
        cases = http[workers]
        groups.append(Group(f"HTTP, --workers {workers} (wrk, {WRK_CONNECTIONS} connections)",
                            list(cases.items()), [("hello-world", cases.get(HELLO_WORLD))],
                            ("p50_ms", "p99_ms")))
    return groups


def smtp_groups(smtp: dict) -> list[Group]:
    """One group per shape; every case is named "PATH, SHAPE"."""
    shapes: dict[str, list[tuple[str, dict]]] = {}
    for name, case in smtp.items():
        path, shape = name.split(", ", 1)
        shapes.setdefault(shape, []).append((path.removesuffix(" -> sink"), case))
    return [Group(f"SMTP, {shape} (smtp-source -> ... -> smtp-sink)", cases,
                  [(short, smtp.get(f"{path}, {shape}")) for short, path in
                   (("direct", DIRECT), ("minimal relay", MINIRELAY_KEPT), ("Postfix", POSTFIX))],
                  ("probe_p50_ms", "probe_p99_ms"), "a probe's single 2 KiB messages during it")
            for shape, cases in shapes.items()]


def cluster_groups(cluster: dict) -> list[Group]:
    """One group per kind of load; every case is named "DEPLOYMENT: WHAT"."""
    loads: dict[str, list[tuple[str, dict]]] = {}
    for name, case in cluster.items():
        deployment, what = name.split(": ", 1)
        loads.setdefault(what, []).append((deployment, case))
    return [Group(f"One node on each Redis deployment: {what}", cases,
                  [("single", cluster.get(f"{SINGLE_REDIS}: {what}"))], ("p50_ms", "p99_ms"))
            for what, cases in loads.items()]


SECTIONS = {"http": http_groups, "smtp": smtp_groups, "cluster": cluster_groups}


def main_groups(result: dict[str, Any]) -> list[Group]:
    """The README's chart: HTTP with the most workers, and SMTP's main shape without "direct"."""
    groups = []
    if result.get("http"):
        groups.append(http_groups(result["http"])[-1])
    for group in smtp_groups(result.get("smtp") or {}):
        if group.title.startswith(f"SMTP, {MAIN_SHAPE} ("):
            groups.append(Group(group.title, [(label, case) for label, case in group.cases
                                              if label != "direct"],
                                [baseline for baseline in group.baselines
                                 if baseline[0] != "direct"], group.latency))
    return groups


def throughput_row(label: str, case: dict, baselines: list[tuple[str, dict | None]]) -> Row | None:
    key = _rate_key(case)
    if key is None:
        return None
    rate = case[key]["median"]
    ratios, baseline = [], False
    for short, other in baselines:
        if other is case:
            baseline = True
            break
        other_rate = other.get(key) if other else None
        if _measured(other_rate) and other_rate["median"]:
            ratios.append(f"{rate / other_rate['median']:.2f}× {short}")
    text = "; ".join((["baseline"] if baseline else []) + ([", ".join(ratios)] if ratios else []))
    return Row(label, (Bar(UNITS[key], case[key], text),), baseline)


def latency_row(label: str, case: dict, keys: tuple[str, str]) -> Row | None:
    if not all(_measured(case.get(key)) for key in keys):
        return None
    return Row(label, tuple(Bar(key.removeprefix("probe_").removesuffix("_ms"), case[key],
                                f"{case[key]['median']:,.1f} ms") for key in keys))


def charts(result: dict[str, Any]) -> dict[str, list[Panel]]:
    """``{"SECTION-throughput": panels, "SECTION-latency": panels}`` for each section of the
    result; a panel without a row and a chart without a panel are left out."""
    made: dict[str, list[Panel]] = {}
    for section, groups_of in SECTIONS.items():
        if not result.get(section):
            continue
        throughput, latency = [], []
        for group in groups_of(result[section]):
            panel = throughput_panel(group)
            if panel:
                throughput.append(panel)
            rows = tuple(row for row in (latency_row(label, case, group.latency)
                                         for label, case in group.cases) if row)
            if rows:
                title = f"{group.title}; {group.latency_source}" if group.latency_source \
                    else group.title
                latency.append(Panel(title, "ms", rows))
        for kind, panels in (("throughput", throughput), ("latency", latency)):
            if panels:
                made[f"{section}-{kind}"] = panels
    main = [panel for panel in map(throughput_panel, main_groups(result)) if panel]
    if main:
        made["main-throughput"] = main
    return made


def throughput_panel(group: Group) -> Panel | None:
    rows = tuple(row for row in (throughput_row(label, case, group.baselines)
                                 for label, case in group.cases) if row)
    return Panel(group.title, rows[0].bars[0].series, rows) if rows else None


# --- drawing


def draw(panels: list[Panel], title: str, path: Path) -> None:
    """The panels one above the other, each as tall as its bars need."""
    slots = [len(panel.rows) * len(panel.rows[0].bars) for panel in panels]
    figure = Figure(figsize=(WIDTH_INCHES, sum(slots) * ROW_INCHES + len(panels) * PANEL_INCHES
                             + 0.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize=10)
    axes = figure.subplots(len(panels), 1, squeeze=False,
                           gridspec_kw={"height_ratios": [n + 2 for n in slots]})[:, 0]
    written = [_draw_panel(ax, panel) for ax, panel in zip(axes, panels)]
    figure.draw_without_rendering()  # lays the panels out, so that the texts can be measured
    for ax, texts in zip(axes, written):
        _make_room(ax, texts)
    figure.savefig(path, format="png")


def _draw_panel(ax, panel: Panel) -> list:
    series = [bar.series for bar in panel.rows[0].bars]
    height = 0.8 / len(series)
    texts = []
    for index, row in enumerate(panel.rows):
        for offset, bar in enumerate(row.bars):
            y = index + (offset - (len(series) - 1) / 2) * height
            colour = (BASELINE_COLOUR if row.baseline else CASE_COLOUR) if len(series) == 1 \
                else LATENCY_COLOURS[offset % len(LATENCY_COLOURS)]
            median, low, high = (bar.figure[k] for k in ("median", "min", "max"))
            ax.barh(y, median, height, color=colour, xerr=[[median - low], [high - median]],
                    error_kw={"ecolor": "#333333", "capsize": 2, "linewidth": 0.8},
                    label=bar.series if index == 0 and len(series) > 1 else None)
            texts.append(ax.text(high, y, f"  {bar.text}", va="center", fontsize=8))
    ax.set_yticks(range(len(panel.rows)),
                  ["\n".join(textwrap.wrap(row.label, LABEL_WIDTH)) for row in panel.rows],
                  fontsize=8)
    ax.set_ylim(len(panel.rows) - 0.5, -0.5)  # the first case on top
    ax.set_title(panel.title, loc="left", fontsize=9)
    ax.set_xlabel(panel.unit, fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", linewidth=0.3)
    ax.set_axisbelow(True)
    if len(series) > 1:
        # above the panel's right end, clear of the bars and their texts
        ax.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(series),
                  frameon=False)
    return texts


def _make_room(ax, texts: list) -> None:
    """Widen the x axis until every text written after a bar ends inside the panel."""
    renderer = ax.figure.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    right = max((t.get_position()[0] for t in texts), default=0) or 1.0
    for text in texts:
        start, width = text.get_position()[0], text.get_window_extent(renderer).width
        if box.width > width:
            right = max(right, start * box.width / (box.width - width * 1.05))
    ax.set_xlim(0, right)


def write_charts(result: dict[str, Any], outdir: Path, stem: str = "bench") -> list[Path]:
    """Every chart of the result as ``OUTDIR/STEM-SECTION-KIND.png``; the paths written."""
    outdir.mkdir(parents=True, exist_ok=True)
    run = f"{result.get('started', '?')}, {result.get('command', '?')}"
    paths = []
    for name, panels in charts(result).items():
        kind = "throughput: median of the runs (whisker: min-max) and ratios to the baselines" \
            if name.endswith("throughput") else "latency: median of the runs (whisker: min-max)"
        path = outdir / f"{stem}-{name}.png"
        draw(panels, f"tempalias benchmark {run}\n{kind}", path)
        paths.append(path)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description="Draw the charts of a benchmark result.")
    parser.add_argument("result", type=Path, help="a JSON of loadtest/results/")
    parser.add_argument("outdir", type=Path, nargs="?", help="default: the JSON's directory")
    args = parser.parse_args()
    result = json.loads(args.result.read_text(encoding="utf-8"))
    for path in write_charts(result, args.outdir or args.result.parent, args.result.stem):
        print(f"chart: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
