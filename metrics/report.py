"""The weekly report: the three numbers of one week as one JSON object or as text, and
the `labelqa report` command (DESIGN "Interfaces").

`--fail-on amber|red` exits 1 when a metric of the week crosses that threshold or swings
up out of its p-chart (the last 12 weeks with data), so a weekly cron job can alert.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import TextIO

import duckdb
import orjson

from metrics import store
from metrics.config import ProjectConfig, load_config
from metrics.status import LEVELS, at_least
from metrics.visual import visual_week
from metrics.weekly import (
    current_week,
    opening_week,
    parse_week,
    policy_week,
    report_swings,
    schema_week,
    weeks,
)
from metrics.workspace import ensure_derived

__all__ = ["add_report_parser", "build_report", "fail_on", "format_text", "report_json"]

FAIL_LEVELS = LEVELS[1:]  # amber, red

# (report section, its rate key, the metric's threshold key, a name for people)
_SECTIONS = (
    ("schema", "error_rate", "schema_error_rate", "schema error rate"),
    ("policy", "violation_rate", "policy_violation_rate", "text policy violations"),
    ("visual", "disagreement_rate", "visual_disagreement_rate", "visual disagreement"),
)


def build_report(con: duckdb.DuckDBPyConnection, config: ProjectConfig,
                 week: str | None = None) -> dict:
    """The weekly report of ``week`` (default: the latest week with data).

    The keys of DESIGN "Interfaces": ``week``, ``annotations`` (|A_w|), ``schema``
    {error_rate, error_rate_ci, status, by_path [{path, keyword, count}]}, ``policy``
    {violation_rate, violation_rate_ci, status, by_rule [{rule, severity, count, per_1000}]} and
    ``visual`` (:func:`metrics.visual.visual_week`). A week without data gives zero
    counts and ``None`` rates with reasons: ``schema.error_rate_reason`` and
    ``policy.violation_rate_reason`` (``None`` while the rate is defined), beside
    ``visual.disagreement_rate_reason``, the same convention as ``alpha_reason``.
    """
    if week is None:
        # An empty database still gets a (zero) report: the current week.
        week = opening_week(con, config)
    week = parse_week(week)
    schema = schema_week(con, config, week)
    policy = policy_week(con, config, week)
    return {
        "week": week,
        "annotations": schema["annotations"],
        "schema": {
            "error_rate": schema["error_rate"],
            "error_rate_ci": schema["error_rate_ci"],
            "status": schema["status"],
            "error_rate_reason": schema["reason"],
            "by_path": schema["by_path"],
        },
        "policy": {
            "violation_rate": policy["violation_rate"],
            "violation_rate_ci": policy["violation_rate_ci"],
            "status": policy["status"],
            "violation_rate_reason": policy["reason"],
            # Warning rules are listed too (M2 counts errors only): each says which.
            "by_rule": [{"rule": r["rule"], "severity": r["severity"], "count": r["count"],
                         "per_1000": r["per_1000"]} for r in policy["by_rule"]],
        },
        "visual": visual_week(con, config, week),
    }


def fail_on(report: Mapping, level: str, swings: Mapping[str, str | None]) -> list[str]:
    """Why ``--fail-on level`` fails this report; empty when it passes.

    A metric fails when its status is ``level`` or worse (a rate at or above the
    threshold), or when it swung up out of its p-chart (``swings[metric] == "up"``, keyed
    by ``schema_error_rate``, ``policy_violation_rate``, ``visual_disagreement_rate``).
    """
    if level not in FAIL_LEVELS:
        raise ValueError(f"level must be one of {', '.join(FAIL_LEVELS)}, got {level!r}")
    reasons = []
    for section, rate_key, metric, _name in _SECTIONS:
        part = report[section]
        if at_least(part["status"], level):
            reasons.append(f"{metric} {_pct(part[rate_key])} is {part['status']}")
        if swings.get(metric) == "up":
            reasons.append(f"{metric} {_pct(part[rate_key])} swung up above its p-chart "
                           "upper control limit")
    return reasons


def report_json(report: Mapping) -> str:
    """The report as indented JSON text (numpy scalars and NaN allowed: NaN -> null)."""
    return orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
                        | orjson.OPT_NON_STR_KEYS).decode()


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def _ci_text(ci) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f"(95% CI {_pct(ci[0])} to {_pct(ci[1])})"


def format_text(report: Mapping, *, project: str = "", swings: Mapping | None = None,
                top: int = 5) -> str:
    """The report for people: the three rates with CI and status, then the top paths
    and rules."""
    swings = swings or {}
    lines = [f"labelqa report{': ' + project if project else ''}, week {report['week']} "
             f"({report['annotations']:,} annotations)", ""]
    visual = report["visual"]
    for section, rate_key, metric, name in _SECTIONS:
        part = report[section]
        rate = part[rate_key]
        status = part["status"]
        swing = f"  swing {swings[metric]}" if swings.get(metric) else ""
        if rate is None:
            lines.append(f"  {name:<24} {'n/a':>7}  {part.get(rate_key + '_reason')}")
            continue
        lines.append(f"  {name:<24} {_pct(rate):>7}  {_ci_text(part[rate_key + '_ci']):<28}"
                     f" {status}{swing}")
    lines.append(f"  visual sample: {visual['items']:,} items, {visual['pairs']:,} pairs")
    by_path = report["schema"]["by_path"][:top]
    if by_path:
        lines += ["", "Top contract errors (annotations with the error):"]
        lines += [f"  {r['count']:>7,}  {r['path'] or '/'}  [{r['keyword']}]" for r in by_path]
    by_rule = report["policy"]["by_rule"][:top]
    if by_rule:
        lines += ["", "Top policy rules (annotations violating it, per 1,000):"]
        lines += [f"  {r['count']:>7,}  {r['per_1000']:>7.1f}  {r['rule']}"
                  + ("  (warning: not in the rate)" if r["severity"] == "warning" else "")
                  for r in by_rule]
    return "\n".join(lines) + "\n"


def cmd_report(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """`labelqa report`: 0 fine, 1 `--fail-on` triggered, 2 unusable argument/project."""
    from metrics.cli import UsageError

    out = out or sys.stdout
    week = None
    if args.week is not None:
        try:
            week = parse_week(args.week)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    config = load_config(args.project)
    ensure_derived(config)
    with store.open_db(config.database, read_only=True) as con:
        report = build_report(con, config, week)
        if week is None:
            _say_weeks_ahead(con, config, report["week"])
        swings = {}
        if args.fail_on or not args.json:
            swings = report_swings(con, config, report["week"])
    if getattr(args, "html", None):
        from metrics.html_report import render_html

        with store.open_db(config.database, read_only=True) as con:
            page = render_html(con, config, report["week"])
        try:
            with open(args.html, "w", encoding="utf-8") as fh:
                fh.write(page)
        except OSError as exc:
            raise UsageError(f"{args.html}: cannot write the HTML report: "
                             f"{exc.strerror or exc}") from None
        out.write(f"wrote the {report['week']} report to {args.html}\n")
    elif args.json:
        out.write(report_json(report) + "\n")
    else:
        out.write(format_text(report, project=config.name, swings=swings))
    if args.fail_on:
        reasons = fail_on(report, args.fail_on, swings)
        if reasons:
            for reason in reasons:
                print(f"labelqa report: fail-on {args.fail_on}: {reason}", file=sys.stderr)
            return 1
    return 0


def _say_weeks_ahead(con: duckdb.DuckDBPyConnection, config: ProjectConfig,
                     shown: str) -> None:
    """Warn (stderr) when data is dated after the week the report defaulted to."""
    ahead = [w for w in weeks(con) if w > shown]
    if ahead:
        print(f"labelqa report: note: {len(ahead)} week(s) with data are dated after "
              f"{shown}, the latest week up to this one ({current_week(config)}): "
              f"{', '.join(ahead[:3])}{' ...' if len(ahead) > 3 else ''}. A typo in "
              "submitted_at? --week shows them.", file=sys.stderr)


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    """Add `report [--project P] [--week W] [--json | --html FILE] [--fail-on amber|red]`."""
    p = subparsers.add_parser("report", help="the weekly report of one week")
    p.add_argument("--project", help="labelqa.toml or its folder")
    p.add_argument("--week", help="ISO week such as 2026-W47 (default: latest with data)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print one JSON object")
    form.add_argument("--html", metavar="FILE",
                      help="write one self-contained HTML file (charts inline)")
    p.add_argument("--fail-on", choices=FAIL_LEVELS, dest="fail_on",
                   help="exit 1 when a metric crosses this level or swings up")
    p.set_defaults(func=cmd_report)
    return p
