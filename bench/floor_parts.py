"""``python -m bench.floor_parts EXPORT``: what ingest costs per line, step by step.

Each step adds one part of the per-record work to the one before, in one process, on
the same lines of a native export (the bench project's config: its contract and policy
rules), and reports the best of ``--runs`` in µs per line:

1. ``orjson`` parse (the floor of ``python -m bench``);
2. + the contract (``jsonschema_rs`` ``is_valid``);
3. + the content hash (sorted dump + blake2b, what duplicates are told by);
4. + the policy rules (`metrics.policy.check_fields`);
5. `metrics.ingest.check_events` without rows (every check: fields, boxes, timestamps);
6. the same with rows (Arrow tables, what a worker sends back).

Steps 1-4 are calls into libraries and the policy engine that no ingest can skip; with
two worker processes their sum, halved, plus the database insert, bounds how close the
ingest can come to the floor while the per-record work runs in Python. ``--json`` writes
the numbers.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import orjson

STEPS = ("parse", "+ contract", "+ content hash", "+ policy", "all checks, no rows",
         "all checks and rows")


def _lines(export: Path, limit: int) -> list[bytes]:
    out = []
    with open(export, "rb") as fh:
        for raw in fh:
            if raw.strip():
                out.append(raw.rstrip(b"\r\n"))
                if len(out) >= limit:
                    break
    return out


def measure(export: Path, *, limit: int = 100_000, runs: int = 3) -> dict:
    from bench.generate import write_project
    from metrics.config import load_config
    from metrics.ingest import Checker, _native_events, check_events
    from metrics.policy import check_fields

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(write_project(Path(tmp) / "project"))
        checker = Checker(config)   # reads the contract while it is there
    valid, policy, labels = checker.validator.is_valid, config.policy, config.labels
    lines = _lines(export, limit)

    def library_steps(upto: int) -> None:
        for raw in lines:
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if upto < 1 or type(obj) is not dict:
                continue
            valid(obj)
            if upto < 2:
                continue
            hashlib.blake2b(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS),
                            digest_size=16).hexdigest()
            if upto < 3:
                continue
            boxes = obj.get("boxes")
            names = {b.get("label") for b in boxes if isinstance(b, dict)} if isinstance(
                boxes, list) else set()
            fields = obj.get("fields")
            if isinstance(fields, dict):
                check_fields(policy, fields, names, labels=labels)

    steps = [lambda k=k: library_steps(k) for k in range(4)]
    steps += [lambda: check_events(checker, _native_events(lines, 1), False),
              lambda: check_events(checker, _native_events(lines, 1), True)]
    gc_was = gc.isenabled()
    gc.disable()   # as the ingest runs
    try:
        us = []
        for fn in steps:
            best = float("inf")
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
            us.append(best / len(lines) * 1e6)
    finally:
        if gc_was:
            gc.enable()
    return {"export": str(export), "lines": len(lines), "runs": runs,
            "us_per_line": dict(zip(STEPS, us, strict=True))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export", type=Path, help="a native export (python -m bench makes them)")
    ap.add_argument("--lines", type=int, default=100_000, help="first N lines (default 100k)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    res = measure(args.export, limit=args.lines, runs=args.runs)
    floor = res["us_per_line"]["parse"]
    print(f"{res['lines']:,} lines of {args.export.name}, best of {res['runs']}")
    print(f"{'step':<22} {'us/line':>8} {'x parse':>8}")
    for step, us in res["us_per_line"].items():
        print(f"{step:<22} {us:8.2f} {us / floor:8.1f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
