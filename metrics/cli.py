"""The `labelqa` command line: init, demo, ingest, check, report, dashboard.

Exit status: 0 fine; 1 the data has problems (`check`) or a metric crossed the line
(`report --fail-on`); 2 a file, config or argument cannot be used. Expected failures
print one message naming the file, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import orjson

from metrics.config import ConfigError, load_config
from metrics.ingest import CHECK_EXAMPLES_KEPT, FileUnusable, IngestSummary, SettingError
from metrics.store import DatabaseError

FORMATS = ("auto", "native", "labelstudio", "coco", "cvat")


class UsageError(Exception):
    """A bad argument: exit 2 with the message."""


def _print_json(obj: object) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def _fmt_counts(counter: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counter.items())) or "none"


def _more(out, n: int, what: str) -> None:
    if n > 0:
        out.write(f"    ... and {n:,} more {what} not listed\n")


def print_summary(summary: IngestSummary, *, verb: str, out=None,
                  examples: int = 10) -> None:
    """Each file's counts, with up to `examples` contract errors and quarantined lines
    (and how many more there are)."""
    out = out or sys.stdout
    for f in summary.files:
        if f.already_ingested:
            out.write(f"{f.path}: already ingested (same content); nothing changed\n")
            continue
        out.write(
            f"{f.path} ({f.format}): {f.records:,} records: {f.loaded:,} {verb}, "
            f"{f.duplicates:,} duplicates, {f.quarantined:,} quarantined, "
            f"{f.skipped_records:,} skipped\n"
        )
        out.write(f"  boxes {f.boxes:,}; roles: {_fmt_counts(f.by_role)}")
        if f.new_versions:
            out.write(f"; new versions {f.new_versions:,}")
        out.write("\n")
        if f.skipped:
            out.write(f"  skipped: {_fmt_counts(f.skipped)}\n")
        out.write(f"  annotations with contract errors: {f.schema_error_annotations:,}; "
                  f"with policy errors: {f.policy_error_annotations:,}\n")
        if f.errors_by:
            out.write("  contract errors by path and keyword:\n")
            for (pointer, keyword), n in f.errors_by.most_common(15):
                out.write(f"    {n:>7,}  {pointer or '/'}  {keyword}\n")
            shown = f.error_examples[:examples]
            out.write("  errors by line:\n")
            for line, pointer, keyword, message in shown:
                out.write(f"    line {line}: {pointer or '/'} [{keyword}] {message}\n")
            _more(out, sum(f.errors_by.values()) - len(shown), "contract errors")
        if f.quarantine_examples:
            out.write("  quarantined lines:\n")
            shown = f.quarantine_examples[:examples]
            for line, reason in shown:
                out.write(f"    line {line}: {reason}\n")
            _more(out, f.quarantined - len(shown), "quarantined lines")
    if len(summary.files) > 1:
        t = summary.to_json()
        out.write(f"total: {t['records']:,} records: {t['loaded']:,} {verb}, "
                  f"{t['duplicates']:,} duplicates, {t['quarantined']:,} quarantined, "
                  f"{t['skipped_records']:,} skipped\n")


def cmd_init(args: argparse.Namespace) -> int:
    from metrics.starter import write_starter

    try:
        written = write_starter(Path(args.dir), force=args.force)
    except FileExistsError as exc:
        raise UsageError(str(exc)) from None
    for p in written:
        print(f"wrote {p}")
    print(f"next: edit {written[0]}, then `labelqa ingest EXPORT --project {args.dir}`")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from metrics.workspace import build_demo

    config, summary = build_demo(Path(args.dir) if args.dir else None, force=args.force,
                                 progress=False if args.quiet else None)
    if summary is None:
        print(f"demo project ready at {config.root} (reused; --force rebuilds it)")
    else:
        t = summary.to_json()
        print(f"demo project built at {config.root}: {t['loaded']:,} annotations loaded, "
              f"{t['quarantined']:,} lines quarantined, {t['duplicates']:,} duplicates")
    print(f"open it: labelqa dashboard --project {config.root}")
    return 0


def _ingest_kwargs(args: argparse.Namespace) -> dict:
    import datetime as dt

    from metrics.importers import ImportOptions

    annotator = args.annotator.strip() if args.annotator is not None else None
    if annotator == "":
        raise UsageError("--annotator must not be empty")
    if args.submitted_at is not None:
        try:
            dt.datetime.fromisoformat(args.submitted_at)
        except ValueError:
            raise UsageError(f"--submitted-at {args.submitted_at!r} is not an ISO 8601 date "
                             "(e.g. 2026-01-05T09:00:00Z)") from None
    options = ImportOptions(annotator=annotator, submitted_at=args.submitted_at,
                            item_id=args.item_id)
    return {"fmt": args.format, "progress": False if args.json or args.quiet else None,
            "options": options}


def cmd_ingest(args: argparse.Namespace) -> int:
    from metrics.workspace import ingest

    config = load_config(args.project)
    summary = ingest(config, args.exports, **_ingest_kwargs(args),
                     on_wait=lambda msg: print(f"labelqa ingest: {msg}", file=sys.stderr))
    if args.json:
        _print_json(summary.to_json())
    else:
        print_summary(summary, verb="loaded")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from metrics.ingest import check_files

    config = load_config(args.project)
    summary = check_files(config, args.exports, **_ingest_kwargs(args))
    if args.json:
        out = summary.to_json()
        out["errors"] = [
            {"path": f.path, "pointer": p, "keyword": k, "count": n}
            for f in summary.files for (p, k), n in sorted(f.errors_by.items())
        ]
        # The lines behind them (up to CHECK_EXAMPLES_KEPT of each per file).
        out["error_lines"] = [
            {"path": f.path, "line": line, "pointer": p, "keyword": k, "message": m}
            for f in summary.files for line, p, k, m in f.error_examples
        ]
        out["quarantine"] = [
            {"path": f.path, "line": line, "reason": reason}
            for f in summary.files for line, reason in f.quarantine_examples
        ]
        _print_json(out)
    else:
        print_summary(summary, verb="would load", examples=CHECK_EXAMPLES_KEPT)
    bad = summary.total("schema_error_annotations") + summary.total("quarantined")
    if not args.json:
        print("check: FAILED" if bad else "check: passed")
    return 1 if bad else 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    import os
    import subprocess

    app = Path(__file__).resolve().parents[1] / "app.py"
    env = dict(os.environ)
    if args.project:
        env["LABELQA_PROJECT"] = str(load_config(args.project).file)
    cmd = [sys.executable, "-m", "streamlit", "run", str(app),
           "--server.port", str(args.port), "--browser.gatherUsageStats", "false"]
    if args.headless:
        cmd += ["--server.headless", "true"]
    return subprocess.call(cmd, env=env, cwd=app.parent)  # .streamlit/config.toml lives there


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labelqa", description="Weekly QA for image + text annotation exports.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="write a starter QA project (config, contract)")
    p.add_argument("dir")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("demo", help="build the demo project and its database")
    p.add_argument("dir", nargs="?", help="where (default data/demo in the repo)")
    p.add_argument("--force", action="store_true", help="rebuild even if it exists")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    for name, func, text in (
        ("ingest", cmd_ingest, "load exports into the project database"),
        ("check", cmd_check, "dry-run exports against the contract; nothing is written"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("exports", nargs="+", metavar="EXPORT")
        p.add_argument("--project", help="labelqa.toml or its folder")
        p.add_argument("--format", choices=FORMATS, default="auto",
                       help="the export's format (default: detected from its content)")
        p.add_argument("--annotator", metavar="NAME",
                       help="annotator of files that name none (COCO; CVAT instead of the "
                            "job assignee; Label Studio where completed_by is missing)")
        p.add_argument("--submitted-at", metavar="ISO",
                       help="submission time of files without one (COCO; CVAT instead of "
                            "<dumped>; Label Studio where created_at is missing)")
        p.add_argument("--item-id", choices=("basename", "tool"), default="basename",
                       help="item ids: the image file's base name (default) or the tool's "
                            "own id (Label Studio task, COCO image, CVAT image id)")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=func)

    p = sub.add_parser("dashboard", help="open the dashboard on a project")
    p.add_argument("--project", help="labelqa.toml or its folder")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.set_defaults(func=cmd_dashboard)

    try:
        from metrics.report import add_report_parser
    except ImportError:
        pass
    else:
        add_report_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileUnusable, DatabaseError, SettingError, UsageError) as exc:
        print(f"labelqa {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`labelqa report | head`): the rest of the output has
        # nowhere to go. Point stdout at devnull so the interpreter's final flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:  # a path the system refuses (not a folder, no permission...)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"labelqa {args.command}: error: {where}{exc.strerror or exc}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"labelqa {args.command}: interrupted; nothing of the current file was "
              "written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
