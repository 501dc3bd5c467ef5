"""The weekly report as one self-contained HTML file, and the charts it shares with the
dashboard.

`labelqa report --html FILE [--week W]` writes what a lead mails after the meeting: the
overview (the three metrics with CI, status and delta), the top movers, the breakdown
(the four kinds of visual agreement, contract errors, policy rules) and the trends with
guideline markers. plotly.js is embedded once, inline: the file opens without a network.
Every string that comes from the data or the config is ``html.escape``d; chart labels
too (plotly reads a subset of HTML in text, and decodes entities back for display).

The figure builders (:func:`trend_figure`, :func:`sparkline_figure`, :func:`bar_figure`)
take plain data and return plotly figures; the dashboard pages draw the same figures.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from metrics import store
from metrics.config import ProjectConfig, load_config
from metrics.overview import policy_examples, schema_examples, week_overview
from metrics.weekly import (
    REPORT_WEEKS,
    guideline_log,
    opening_week,
    parse_week,
    series,
    week_start,
)

__all__ = [
    "SEVERITY_COLOR",
    "STATUS_COLOR",
    "bar_figure",
    "fmt_mover",
    "fmt_mover_delta",
    "render_html",
    "report_bytes",
    "sparkline_figure",
    "trend_figure",
    "week_x",
]

STATUS_COLOR = {"green": "#1a7f37", "amber": "#b35900", "red": "#cf222e", None: "#6e7781"}
#: Bar colors of policy rules by severity.
SEVERITY_COLOR = {"error": "#cf222e", "warning": "#d08700"}
_AMBER_LINE, _RED_LINE = "#e69500", "#cf222e"
_LINE = "#1f5fa8"
_BAND = "rgba(31, 95, 168, 0.16)"
_FONT = {"size": 15}

#: Axis titles of each metric's rate.
Y_TITLES = {
    "schema": "annotations with a contract error (%)",
    "policy": "annotations with a policy error (%)",
    "visual": "box units in disagreement (%)",
}

MOVER_KINDS = {
    "path": "contract errors at path",
    "rule": "policy rule",
    "label": "visual disagreement, label",
    "pair": "visual disagreement, annotator pair",
}


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _finite(values: Iterable) -> list[float | None]:
    out = []
    for v in values:
        v = None if v is None else float(v)
        out.append(None if v is None or math.isnan(v) else v)
    return out


def week_x(weeks: Sequence[str]) -> list[dt.date]:
    """Where a week sits on a date axis: its Thursday (the middle of the ISO week), so a
    guideline marker at an ``effective`` Monday falls between the weeks it separates."""
    return [week_start(w) + dt.timedelta(days=3) for w in weeks]


def _tick_format(values: Iterable[float | None]) -> str:
    finite = [v for v in values if v is not None]
    return ".1%" if finite and max(finite) < 0.1 else ".0%"


def _layout(fig: go.Figure, *, title: str, y_title: str | None, height: int,
            x_title: str | None = "ISO week") -> None:
    fig.update_layout(
        title={"text": _esc(title), "font": {"size": 20}, "x": 0.01, "xanchor": "left"},
        height=height, font=_FONT, template="plotly_white",
        margin={"l": 70, "r": 30, "t": 70, "b": 60},
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0,
                "font": {"size": 14}, "traceorder": "normal"},
        hovermode="x unified",
    )
    # Explicit sizes: the dashboard's theme would otherwise shrink ticks for a projector.
    axis_fonts = {"tickfont": {"size": 14}, "title_font": {"size": 15}}
    fig.update_xaxes(title_text=x_title, **axis_fonts)
    fig.update_yaxes(title_text=y_title, rangemode="tozero", **axis_fonts)


def _threshold_lines(fig: go.Figure, thresholds: Sequence[float] | None) -> None:
    if not thresholds:
        return
    for value, color, name in ((thresholds[0], _AMBER_LINE, "amber"),
                               (thresholds[1], _RED_LINE, "red")):
        fig.add_hline(y=value, line={"color": color, "dash": "dash", "width": 1.5},
                      annotation_text=f"{name} {value:.0%}" if value >= 0.1
                      else f"{name} {value:.1%}",
                      annotation_position="top right",
                      annotation_font={"color": color, "size": 13})


def _guideline_markers(fig: go.Figure, guidelines: Sequence[dict], x: Sequence[dt.date]
                       ) -> None:
    """A vertical line at each guideline version's ``effective`` date within the chart,
    labelled with the version (shapes + annotations: robust on date axes)."""
    if not x:
        return
    lo, hi = min(x) - dt.timedelta(days=4), max(x) + dt.timedelta(days=4)
    for g in guidelines:
        day = dt.date.fromisoformat(g["effective"])
        if not lo <= day <= hi:
            continue
        fig.add_shape(type="line", x0=day, x1=day, yref="paper", y0=0, y1=1,
                      line={"color": "#6639ba", "width": 2, "dash": "dot"})
        fig.add_annotation(x=day, yref="paper", y=1.0, yanchor="bottom", showarrow=False,
                           text=f"<b>{_esc(g['version'])}</b>",
                           hovertext=_esc(f"{g['version']} effective {g['effective']}: "
                                          f"{g.get('summary', '')}"),
                           font={"color": "#6639ba", "size": 14})


def trend_figure(df: pd.DataFrame, prefix: str, *, title: str,
                 guidelines: Sequence[dict] = (), thresholds: Sequence[float] | None = None,
                 limits: bool = True, week: str | None = None, height: int = 400,
                 y_title: str | None = None) -> go.Figure:
    """A metric's weekly series: the rate with its 95% CI band, optionally the p-chart
    centre line and control limits with swing markers, threshold lines, a marker at each
    guideline version, and the selected ``week`` shaded.

    ``df`` is :func:`metrics.weekly.series` output; ``prefix`` is ``schema``, ``policy``
    or ``visual`` (its ``{prefix}_rate``, ``_ci_low``, ``_ci_high``, ``_center``,
    ``_lcl``, ``_ucl`` and ``_swing`` columns are drawn, rates as fractions shown as %).
    """
    weeks = df["week"].tolist()
    x = week_x(weeks)
    rate = _finite(df[f"{prefix}_rate"])
    fig = go.Figure()
    if f"{prefix}_ci_low" in df:
        fig.add_trace(go.Scatter(x=x, y=_finite(df[f"{prefix}_ci_high"]), mode="lines",
                                 line={"width": 0}, hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=x, y=_finite(df[f"{prefix}_ci_low"]), mode="lines",
                                 line={"width": 0}, fill="tonexty", fillcolor=_BAND,
                                 name="95% CI", hoverinfo="skip"))
    if limits and f"{prefix}_ucl" in df:
        fig.add_trace(go.Scatter(x=x, y=_finite(df[f"{prefix}_center"]), mode="lines",
                                 name="p̄ (centre)", hoverinfo="skip",
                                 line={"color": "#57606a", "dash": "dash", "width": 1.5}))
        fig.add_trace(go.Scatter(x=x, y=_finite(df[f"{prefix}_ucl"]), mode="lines",
                                 name="control limits (±3σ)", line_shape="hvh",
                                 line={"color": "#8c959f", "dash": "dot", "width": 1.5},
                                 hovertemplate="UCL %{y:.1%}<extra></extra>"))
        fig.add_trace(go.Scatter(x=x, y=_finite(df[f"{prefix}_lcl"]), mode="lines",
                                 showlegend=False, line_shape="hvh",
                                 line={"color": "#8c959f", "dash": "dot", "width": 1.5},
                                 hovertemplate="LCL %{y:.1%}<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=rate, mode="lines+markers", name="weekly rate",
                             customdata=weeks, line={"color": _LINE, "width": 3},
                             marker={"size": 9},
                             hovertemplate="%{customdata}: <b>%{y:.2%}</b><extra></extra>"))
    if limits and f"{prefix}_swing" in df:
        for direction, symbol, color in (("up", "triangle-up", _RED_LINE),
                                         ("down", "triangle-down", STATUS_COLOR["green"])):
            idx = [i for i, s in enumerate(df[f"{prefix}_swing"]) if s == direction]
            if idx:
                fig.add_trace(go.Scatter(
                    x=[x[i] for i in idx], y=[rate[i] for i in idx], mode="markers",
                    name=f"swing {direction} (outside the limits)",
                    marker={"symbol": symbol, "size": 17, "color": color,
                            "line": {"color": "white", "width": 1}},
                    customdata=[weeks[i] for i in idx],
                    hovertemplate=f"%{{customdata}}: swing {direction}<extra></extra>"))
    if week is not None and week in weeks:
        mid = x[weeks.index(week)]
        fig.add_vrect(x0=mid - dt.timedelta(days=3.5), x1=mid + dt.timedelta(days=3.5),
                      fillcolor="rgba(234, 179, 8, 0.15)", line_width=0, layer="below")
    _threshold_lines(fig, thresholds)
    _guideline_markers(fig, guidelines, x)
    years = {w[:4] for w in weeks}
    one_year = len(years) == 1
    _layout(fig, title=title, y_title=y_title or Y_TITLES.get(prefix), height=height,
            x_title=f"ISO week of {years.pop()}" if one_year else "ISO week")
    # Short labels (W36) when the weeks share a year; every label when few, else a subset.
    step = max(1, math.ceil(len(weeks) / 16))
    fig.update_xaxes(tickvals=x[::step],
                     ticktext=[w[5:] if one_year else w for w in weeks][::step],
                     tickangle=0 if one_year else -45)
    fig.update_yaxes(tickformat=_tick_format(
        rate + _finite(df.get(f"{prefix}_ci_high", pd.Series(dtype=float)))))
    return fig


def sparkline_figure(weeks: Sequence[str], rates: Sequence[float | None], *,
                     thresholds: Sequence[float] | None = None, week: str | None = None,
                     title: str = "", height: int = 170) -> go.Figure:
    """A small weekly line (the overview's sparkline): rates as %, amber/red lines, the
    selected week as a larger dot."""
    rates = _finite(rates)
    weeks = list(weeks)
    fig = go.Figure(go.Scatter(
        x=weeks, y=rates, mode="lines+markers", customdata=weeks,
        line={"color": _LINE, "width": 2.5}, marker={"size": 5},
        hovertemplate="%{customdata}: %{y:.1%}<extra></extra>", showlegend=False))
    if week in weeks:
        i = weeks.index(week)
        fig.add_trace(go.Scatter(x=[week], y=[rates[i]], mode="markers", showlegend=False,
                                 marker={"size": 11, "color": _LINE}, hoverinfo="skip"))
    if thresholds:
        for value, color in ((thresholds[0], _AMBER_LINE), (thresholds[1], _RED_LINE)):
            fig.add_hline(y=value, line={"color": color, "dash": "dash", "width": 1})
    fig.update_layout(
        title={"text": _esc(title), "font": {"size": 13}, "x": 0.0, "xanchor": "left"},
        height=height, template="plotly_white", font={"size": 12},
        margin={"l": 45, "r": 10, "t": 30 if title else 8, "b": 30}, showlegend=False)
    tickvals = [weeks[0], weeks[-1]] if weeks else []
    fig.update_xaxes(type="category", tickvals=tickvals,
                     ticktext=[w[5:] for w in tickvals], showgrid=False)
    top = max([v for v in rates if v is not None] + list(thresholds or [0]) + [0.01])
    fig.update_yaxes(tickformat=_tick_format(rates), range=[0, top * 1.15], nticks=4)
    return fig


def bar_figure(labels: Sequence[Any], values: Sequence[float], *, title: str, x_title: str,
               percent: bool = False, text: Sequence[str] | None = None,
               color: str | Sequence[str] = _LINE, height: int | None = None) -> go.Figure:
    """Horizontal bars, first on top: breakdowns by path, rule, annotator. Labels come
    from the data, so they are escaped. ``color`` is one color or one per bar."""
    if not isinstance(color, str):
        color = list(color)
    labels = [_esc(v) if v not in (None, "") else "(root)" for v in labels]
    values = _finite(values)
    fig = go.Figure(go.Bar(
        x=values, y=labels, orientation="h", marker_color=color,
        text=list(text) if text is not None else None, textposition="auto",
        hovertemplate="%{y}: %{x" + (":.1%" if percent else ":,") + "}<extra></extra>"))
    n = max(len(labels), 1)
    _layout(fig, title=title, y_title=None, x_title=x_title,
            height=height or min(900, 130 + 34 * n))
    fig.update_layout(hovermode="closest", margin={"l": 20, "r": 30, "t": 60, "b": 60})
    fig.update_yaxes(autorange="reversed", automargin=True, rangemode=None)
    if percent:
        fig.update_xaxes(tickformat=_tick_format(values))
    return fig


# -- the HTML file -----------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 0 auto; max-width: 1200px; padding: 24px 32px; color: #1f2328;
       font-size: 16px; line-height: 1.45; }
h1 { font-size: 30px; margin-bottom: 4px; }
h2 { font-size: 23px; margin-top: 36px; border-bottom: 1px solid #d0d7de;
     padding-bottom: 4px; }
.sub { color: #57606a; margin-top: 0; }
.cards { display: flex; gap: 18px; flex-wrap: wrap; }
.card { flex: 1 1 300px; border: 1px solid #d0d7de; border-radius: 10px;
        padding: 16px 20px; border-top: 8px solid var(--status); }
.card .name { font-size: 17px; font-weight: 600; }
.card .value { font-size: 46px; font-weight: 700; margin: 4px 0; }
.card .status { display: inline-block; padding: 2px 10px; border-radius: 12px;
                color: white; background: var(--status); font-weight: 600; }
.card .detail { color: #57606a; font-size: 15px; margin-top: 6px; }
.delta-up { color: #cf222e; font-weight: 600; }
.delta-down { color: #1a7f37; font-weight: 600; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 15px; }
th, td { border-bottom: 1px solid #d0d7de; padding: 6px 12px; text-align: left; }
th { background: #f6f8fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.warn { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px;
        padding: 8px 14px; }
.info { background: #ddf4ff; border: 1px solid #54aeff; border-radius: 6px;
        padding: 8px 14px; }
footer { color: #57606a; font-size: 13px; margin-top: 40px; }
mark { background: #ffd8d3; font-weight: 600; padding: 0 2px; }
"""


def _pct(rate: float | None, digits: int = 1) -> str:
    return "–" if rate is None else f"{rate * 100:.{digits}f}%"


def _ci(ci: Any, digits: int = 1) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "95% CI –"
    return f"95% CI {ci[0] * 100:.{digits}f}–{ci[1] * 100:.{digits}f}%"


def _pp(delta: float | None) -> str:
    return "–" if delta is None else f"{delta * 100:+.1f} pp"


def fmt_mover(kind: str, rate: float | None) -> str:
    """A mover's rate in its unit: a rule per 1,000 annotations (as the Text policy page
    counts it), any other kind in %."""
    if kind == "rule" and rate is not None:
        return f"{rate * 1000:.1f} per 1,000"
    return _pct(rate)


def fmt_mover_delta(kind: str, delta: float | None) -> str:
    """A mover's change in its unit: per 1,000 for a rule, percentage points otherwise."""
    if kind == "rule" and delta is not None:
        return f"{delta * 1000:+.1f} per 1,000"
    return _pp(delta)


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
           numeric: Sequence[int] = ()) -> str:
    head = "".join(f'<th class="{"num" if i in numeric else ""}">{_esc(h)}</th>'
                   for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if i in numeric else ""}">{_esc(c)}</td>'
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _card(m: dict, previous_week: str) -> str:
    status = m["status"]
    if m["delta"] is None:
        delta = f"Δ – ({_esc(m['delta_reason'])})"
    else:
        cls = "delta-up" if m["delta"] > 0 else "delta-down" if m["delta"] < 0 else ""
        delta = (f'<span class="{cls}">{_esc(_pp(m["delta"]))}</span> vs '
                 f"{_esc(previous_week)} ({_esc(_pct(m['previous']))})")
    amber, red = m["thresholds"]
    swing = (f"<div class=\"detail\"><b>Swing {_esc(m['swing'])}</b>: outside the "
             "p-chart control limits</div>" if m["swing"] else "")
    reason = f"<div class=\"detail\">{_esc(m['reason'])}</div>" if m["reason"] else ""
    return (
        f'<div class="card" style="--status: {STATUS_COLOR.get(status, "#6e7781")}">'
        f'<div class="name">{_esc(m["name"])}</div>'
        f'<div class="value">{_esc(_pct(m["rate"]))}</div>'
        f'<span class="status">{_esc(status or "no data")}</span>'
        f'<div class="detail">{_esc(_ci(m["ci"]))} · {m["events"]:,} of {m["units"]:,} '
        f'{_esc(m["unit_name"])}</div>'
        f'<div class="detail">{delta}</div>'
        f'<div class="detail">thresholds: amber ≥ {_esc(_pct(amber))}, red ≥ '
        f'{_esc(_pct(red))}</div>{swing}{reason}</div>')


def _kinds_rows(visual: dict) -> list[list[str]]:
    rows = []
    parts = [("presence", "", visual["presence"]), ("class", "", visual["class"])]
    parts += [(part.get("kind", "text"), field, part)
              for field, part in visual["text"].items()]
    parts.append(("schema", "", visual["schema"]))
    for kind, field, part in parts:
        note = part.get("alpha_reason") or ""
        if part.get("mean_similarity") is not None:
            note = (f"mean similarity {part['mean_similarity']:.2f}, "
                    f"{_pct(part.get('share_below_0_8'))} of pairs below 0.8")
        warnings = "; ".join(part.get("warnings", []))
        rows.append([kind, field, f"{part['units']:,}", _pct(part["agreement"]),
                     _num(part["alpha"]),
                     (f"{_num(part['alpha_ci'][0])} to {_num(part['alpha_ci'][1])}"
                      if part.get("alpha_ci") else "–"),
                     "; ".join(x for x in (note, warnings) if x)])
    return rows


def _marked(text: str, spans: Sequence[Sequence[int]]) -> str:
    """``text`` escaped, with the code-point ``spans`` wrapped in ``<mark>``."""
    out, pos = [], 0
    for start, end in sorted(tuple(s) for s in spans):
        start, end = max(start, pos), min(end, len(text))
        if end <= start:
            continue
        out += [_esc(text[pos:start]), f"<mark>{_esc(text[start:end])}</mark>"]
        pos = end
    out.append(_esc(text[pos:]))
    return "".join(out)


def _examples_html(con: duckdb.DuckDBPyConnection, config: ProjectConfig, week: str,
                   n: int = 5) -> str:
    """A few annotations behind M2 and M1: the words that broke an error rule, and the
    contract errors with their messages."""
    parts = []
    found = policy_examples(con, config, week, severity="error", limit=n)
    if found["examples"]:
        parts.append(f"<h3>Text policy errors ({len(found['examples'])} of {found['total']:,} "
                     "annotations)</h3>"
                     "<ul>")
        for ex in found["examples"]:
            rules = ", ".join(sorted({v["rule"] for v in ex["violations"] if v["match"]}))
            texts = "; ".join(f"{_esc(t['field'])}: “{_marked(t['text'], t['spans'])}”"
                              for t in ex["texts"])
            parts.append(f"<li><b>{_esc(ex['item_id'])}</b> by {_esc(ex['annotator_id'])} "
                         f"— {_esc(rules)}: {texts}</li>")
        parts.append("</ul>")
    schema = schema_examples(con, config, week, limit=n)
    if schema["total"]:
        parts.append(f"<h3>Contract errors ({min(n, schema['total'])} of "
                     f"{schema['total']:,} annotations)</h3>")
        parts.append(_table(["item", "annotator", "errors"],
                            schema["examples"][["item_id", "annotator_id", "details"]]
                            .itertuples(index=False)))
    return "".join(parts)


def _figure_html(fig: go.Figure) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False,
                       config={"displaylogo": False, "responsive": True})


def render_html(con: duckdb.DuckDBPyConnection, config: ProjectConfig,
                week: str | None = None) -> str:
    """The weekly report of ``week`` (default: the latest with data up to this week) as one
    self-contained HTML document: the overview cards, small-sample warnings, the
    guideline in force, the top movers, the breakdown (visual agreement by kind, contract
    errors by path, policy rules), a few example annotations and the trends of the last
    :data:`metrics.weekly.REPORT_WEEKS` weeks with data (CI band, p-chart limits,
    guideline markers), with plotly.js inline. The numbers are
    :func:`metrics.report.build_report`'s."""
    if week is None:
        week = opening_week(con, config)
    week = parse_week(week)
    ov = week_overview(con, config, week)
    report = ov["report"]
    log = guideline_log(config)
    trend = series(con, config, last=REPORT_WEEKS, until=week)

    parts = [f"<h1>Weekly QA report · {_esc(config.name)} · {_esc(week)}</h1>"]
    g = ov["guideline"]
    sub = f"{report['annotations']:,} annotations"
    sub += (f" · guideline {_esc(g['version'])} in force (since {_esc(g['effective'])})"
            if g else " · no guideline version in force")
    sub += (f" · visual sample: {ov['visual_sample']['items']:,} items, "
            f"{ov['visual_sample']['pairs']:,} pairs")
    parts.append(f'<p class="sub">{sub}</p>')

    parts.append("<h2>Overview</h2>")
    parts.append('<div class="cards">' + "".join(_card(m, ov["previous_week"])
                                                 for m in ov["metrics"]) + "</div>")
    for change in ov["changes"]:
        parts.append(f'<p class="info">Guideline <b>{_esc(change["version"])}</b> took '
                     f'effect this week ({_esc(change["effective"])}): '
                     f'{_esc(change["summary"])}</p>')
    if ov["warnings"]:
        parts.append('<div class="warn"><b>Small samples</b><ul>'
                     + "".join(f"<li>{_esc(w)}</li>" for w in ov["warnings"])
                     + "</ul></div>")

    parts.append(f"<h2>Top movers against {_esc(ov['previous_week'])}</h2>")
    if ov["movers"]:
        parts.append(_table(
            ["what", "which", ov["previous_week"], week, "change", "units (this week)"],
            [[MOVER_KINDS.get(m["kind"], m["kind"]), m["key"],
              fmt_mover(m["kind"], m["previous"]), fmt_mover(m["kind"], m["rate"]),
              fmt_mover_delta(m["kind"], m["delta"]), f"{m['units']:,}"]
             for m in ov["movers"]],
            numeric=(2, 3, 4, 5)))
    else:
        parts.append("<p>No per-path, per-rule, per-label or per-pair rate has at least 20 "
                     f"units in both {_esc(ov['previous_week'])} and {_esc(week)}.</p>")

    visual = report["visual"]
    parts.append("<h2>Breakdown</h2>")
    parts.append("<h3>Visual agreement on the stable sample, by kind</h3>")
    parts.append(
        f"<p>{visual['agreements']:,} agreements, {visual['class_disagreements']:,} class "
        f"and {visual['presence_disagreements']:,} presence disagreements, "
        f"{visual['low_overlap']:,} low-overlap pairs (IoU below "
        f"{config.agreement.low_overlap:g}). Against gold: "
        f"{_esc(_pct(visual['reference']['disagreement_rate']))} disagreement over "
        f"{visual['reference']['pairs']:,} pairs.</p>")
    parts.append(_table(["kind", "field", "units", "% agreement", "alpha", "alpha 95% CI",
                         "notes"], _kinds_rows(visual), numeric=(2, 3, 4)))
    parts.append("<h3>Contract errors by path (annotations with the error)</h3>")
    by_path = report["schema"]["by_path"][:15]
    parts.append(_table(["path", "keyword", "annotations"],
                        [[r["path"] or "/", r["keyword"], f"{r['count']:,}"]
                         for r in by_path], numeric=(2,))
                 if by_path else "<p>No contract errors this week.</p>")
    parts.append("<h3>Text policy rules (annotations violating each)</h3>")
    by_rule = report["policy"]["by_rule"]
    parts.append(_table(["rule", "severity", "annotations", "per 1,000"],
                        [[r["rule"], r["severity"], f"{r['count']:,}", _num(r["per_1000"], 1)]
                         for r in by_rule], numeric=(2, 3))
                 if by_rule else "<p>No policy violations this week.</p>")

    examples = _examples_html(con, config, week)
    if examples:
        parts.append("<h2>Examples</h2>" + examples)

    parts.append(f"<h2>Trends (the last {REPORT_WEEKS} weeks with data)</h2>")
    if trend.empty:
        parts.append("<p>No weeks with data up to this week.</p>")
    else:
        names = {m["section"]: m for m in ov["metrics"]}
        for prefix in ("schema", "policy", "visual"):
            m = names[prefix]
            fig = trend_figure(trend, prefix, title=f"{m['name']} by week",
                               guidelines=log, thresholds=m["thresholds"], week=week)
            parts.append(_figure_html(fig))
    parts.append("<h2>Guideline log</h2>")
    parts.append(_table(["version", "effective", "ISO week", "fields", "relabel", "summary"],
                        [[x["version"], x["effective"], x["week"], ", ".join(x["fields"]),
                          x["relabel"], x["summary"]] for x in log])
                 if log else "<p>No [[guideline]] entries in the project config.</p>")
    parts.append(f"<footer>labelqa weekly report of project {_esc(config.name)} for "
                 f"{_esc(week)}; rates are fractions of the week's annotations (roles "
                 "annotator, reviewer, gold) or, for visual disagreement, of box units "
                 "on the stable sample. Intervals: Wilson (schema, policy), item "
                 "bootstrap (visual).</footer>")

    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>labelqa · {_esc(config.name)} · {_esc(week)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        "</head><body>" + "\n".join(parts) + "</body></html>\n")


def report_bytes(config_file: str | Path, week: str | None = None) -> bytes:
    """:func:`render_html` of a project named by its config file, as UTF-8 bytes, on a
    read-only connection of its own (the dashboard's download button runs this when
    clicked)."""
    config = load_config(config_file)
    with store.open_db(config.database, read_only=True) as con:
        return render_html(con, config, week).encode("utf-8")
