"""Data: the exports ingested, the quarantine with line numbers and reasons, and loading a
new export (size-limited upload, saved under exports/uploads/) — ingested, or checked
against the contract without writing anything.

The dashboard writes to the database only here, through `metrics.workspace.ingest`.
URL: ?export=3
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from metrics import inventory, store
from metrics.importers import ImportOptions
from metrics.ingest import FileUnusable, check_files
from metrics.workspace import ingest
from pages.common import ui
from pages.common.ui import plural

P = "data_"
ACTIONS = {"check": "Check only (dry run: nothing is written)",
           "ingest": "Ingest into the project database"}


config = ui.page_header(
    "Data", "exports ingested, the quarantine, and loading or checking a new export")
has_data = ui.has_data(config)

# -- exports -----------------------------------------------------------------------------

st.subheader("Exports ingested")
exports = ui.safe_call(inventory.exports) if has_data else pd.DataFrame()
if exports.empty:
    ui.empty_project(config)
else:
    c1, c2, c3, c4, c5 = st.columns(5)
    c1.metric("Exports (files)", f"{len(exports):,}")
    c2.metric("Records (lines / entries)", f"{int(exports['records'].sum()):,}")
    c3.metric("Loaded (annotations)", f"{int(exports['loaded'].sum()):,}")
    c4.metric("Quarantined (lines)", f"{int(exports['quarantined'].sum()):,}")
    c5.metric("Duplicates (records)", f"{int(exports['duplicates'].sum()):,}")
    st.dataframe(
        exports.drop(columns=["path"]), hide_index=True, key=P + "exports",
        height=min(len(exports), 15) * 35 + 40,
        column_config={
            "export_id": st.column_config.NumberColumn("#", format="%d"),
            "name": "file",
            "format": "format",
            "records": st.column_config.NumberColumn(
                "lines / records", format="%d",
                help="Non-blank lines of a native export; annotation entries of the others."),
            "loaded": st.column_config.NumberColumn("loaded", format="%d"),
            "duplicates": st.column_config.NumberColumn("duplicates", format="%d",
                                                        help="Already stored, unchanged."),
            "quarantined": st.column_config.NumberColumn("quarantined", format="%d"),
            "skipped_records": st.column_config.NumberColumn("skipped", format="%d",
                                                             help="Cancelled, crowd, ..."),
            "new_versions": st.column_config.NumberColumn("new versions", format="%d"),
            "boxes": st.column_config.NumberColumn("boxes", format="%d"),
            "size_bytes": st.column_config.NumberColumn("size", format="bytes"),
            "ingested_at": st.column_config.DatetimeColumn("loaded at",
                                                           format="YYYY-MM-DD HH:mm z"),
            "balanced": st.column_config.CheckboxColumn(
                "counts add up", help="records = loaded + duplicates + quarantined + skipped"),
        })

# -- quarantine --------------------------------------------------------------------------

st.subheader("Quarantine")
if exports.empty:
    st.caption("Nothing quarantined: no exports yet.")
else:
    names = dict(zip(exports["export_id"].astype(str), exports["name"], strict=True))
    options = [""] + list(names)
    ui.init(P + "export", ui.query_default("export", options, ""))
    chosen = st.selectbox("Export", options, key=P + "export",
                          format_func=lambda e: f"#{e} {names[e]}" if e else "All exports")
    ui.sync_param("export", chosen)
    bad = ui.safe_call(inventory.quarantine, int(chosen) if chosen else None)
    if bad.empty:
        st.success("No quarantined lines" + (f" in {names[chosen]}" if chosen else "")
                   + ": every line was a JSON object with item_id, annotator_id and "
                     "submitted_at.")
    else:
        st.markdown(f"**{plural(len(bad), 'quarantined line')}**: not loaded; fix them at "
                    "the source and ingest the corrected export.")
        st.dataframe(
            bad[["export", "line", "reason", "raw"]], hide_index=True, key=P + "quarantine",
            column_config={
                "export": "file",
                "line": st.column_config.NumberColumn("line", format="%d"),
                "reason": st.column_config.TextColumn("reason", width="large"),
                "raw": st.column_config.TextColumn("raw line (as text, capped)",
                                                   width="large"),
            })
        rows = list(range(len(bad)))
        pick = st.selectbox(
            "Show a quarantined line in full", rows, key=P + "line",
            format_func=lambda i: f"{bad['export'].iloc[i]} line {bad['line'].iloc[i]}")
        st.code(bad["raw"].iloc[pick] or "", language=None, wrap_lines=True)

# -- load a new export -------------------------------------------------------------------

st.subheader("Load a new export")
limit_mb = config.dashboard.max_upload_mb
limit = inventory.max_upload_bytes(config)
st.caption(
    f"Native JSON Lines, Label Studio JSON, COCO JSON or CVAT XML, up to **{limit_mb:g} MB** "
    "(`[dashboard] max_upload_mb`). The file is saved under `exports/uploads/` in the "
    "project folder. Larger files: `labelqa ingest FILE` from a terminal.")

uploaded = st.file_uploader("Export file", key=P + "upload",
                            type=["jsonl", "ndjson", "json", "xml", "txt"],
                            max_upload_size=max(1, math.ceil(limit_mb)))
ui.init(P + "action", "check")
action = st.radio("What to do with it", list(ACTIONS), key=P + "action",
                  format_func=ACTIONS.get, horizontal=True)
with st.expander("Options for files that do not name an annotator or a time (COCO, some "
                 "CVAT and Label Studio exports)"):
    o1, o2 = st.columns(2)
    annotator = o1.text_input("Annotator id", key=P + "annotator",
                              help="Used where the file names none (`--annotator`).")
    submitted = o2.text_input("Submitted at (ISO 8601)", key=P + "submitted",
                              placeholder="2026-11-20T10:00:00Z",
                              help="Used where the file has no time (`--submitted-at`).")


def show_summary(result: dict) -> None:
    s = result["summary"]
    verb = "would load" if result["action"] == "check" else "loaded"
    st.markdown(
        f"{s['records']:,} records · {verb} **{s['loaded']:,}** · quarantined "
        f"**{s['quarantined']:,}** · duplicates {s['duplicates']:,} · skipped "
        f"{s['skipped_records']:,} · {s['schema_error_annotations']:,} annotations with "
        f"contract errors · {s['policy_error_annotations']:,} with policy errors")
    for f in s["files"]:
        if f.get("already_ingested"):
            st.info(f"{ui.md_escape(f['path'])}: already ingested (same content): nothing "
                    "changed.")
    if result.get("errors_by"):
        st.markdown("**Contract errors by path** (annotations)")
        st.dataframe(pd.DataFrame(result["errors_by"], columns=["path", "keyword", "count"]),
                     hide_index=True)
    if result.get("error_examples"):
        st.markdown("**Examples**")
        st.dataframe(pd.DataFrame(result["error_examples"],
                                  columns=["line", "path", "keyword", "message"]),
                     hide_index=True)
    if result.get("quarantine_examples"):
        st.markdown("**Lines that would be quarantined**" if result["action"] == "check"
                    else "**Quarantined lines**")
        st.dataframe(pd.DataFrame(result["quarantine_examples"], columns=["line", "reason"]),
                     hide_index=True)


if uploaded is not None:
    size = uploaded.size
    if size > limit:
        st.error(
            f"Refused: {ui.md_escape(uploaded.name)} is {inventory.fmt_size(size)}, over the "
            f"{limit_mb:g} MB ({limit:,} bytes) upload limit (`[dashboard] max_upload_mb` in "
            "labelqa.toml). "
            "Raise the limit, or ingest it from a terminal with `labelqa ingest`.")
    elif st.button("Check the export" if action == "check" else "Ingest the export",
                   type="primary", key=P + "run"):
        options = ImportOptions(annotator=annotator.strip() or None,
                                submitted_at=submitted.strip() or None)
        result: dict = {"action": action, "file": uploaded.name}
        failure: tuple[str, str] | None = None
        with st.status(f"Saving {uploaded.name}…", expanded=True) as status, \
                contextlib.ExitStack() as scratch:
            bar = st.progress(0.0, text="saving the upload")
            try:
                uploaded.seek(0)
                # A dry run checks a scratch copy, removed afterwards: nothing is written
                # to the project.
                folder = (Path(scratch.enter_context(tempfile.TemporaryDirectory(
                    prefix="labelqa-check-"))) if action == "check" else None)
                path = inventory.save_upload(
                    config, uploaded.name, uploaded, size, folder=folder,
                    on_progress=lambda done, total: bar.progress(
                        min(1.0, done / max(total, 1)),
                        text=f"saved {inventory.fmt_size(done)} of "
                             f"{inventory.fmt_size(total)}"))
                bar.progress(1.0, text="saved a scratch copy to check" if folder else
                             f"saved as exports/uploads/{path.name}")
                if action == "check":
                    status.update(label="Checking against the contract (nothing is written)…")
                    summary = check_files(config, [path], progress=False, options=options)
                else:
                    status.update(label="Ingesting (the database is locked while it "
                                        "writes)…")
                    for attempt in range(5):
                        try:
                            summary = ingest(config, [path], progress=False, options=options)
                            break
                        except store.DatabaseError as exc:
                            if "lock" not in str(exc).lower() or attempt == 4:
                                raise
                            status.update(label="⏳ The database is updating (another "
                                                "ingest is writing); retrying…")
                            time.sleep(2)
            except inventory.UploadRefused as exc:
                failure = ("Upload refused", f"Refused: {exc}")
            except FileUnusable as exc:
                failure = ("The file cannot be used", f"The file cannot be used: {exc.problem}")
            except store.DatabaseError as exc:
                failure = ("The database is busy",
                           f"The database could not be written: {exc}. Try again in a minute.")
            except Exception as exc:  # the dashboard shows what went wrong, never crashes
                failure = ("Failed", f"{ACTIONS[action].split(' (')[0]} failed: "
                                     f"{type(exc).__name__}: {exc}")
            if failure:
                status.update(label=failure[0], state="error", expanded=False)
            else:
                result["summary"] = summary.to_json()
                result["errors_by"] = sorted(
                    ([p, k, n] for f in summary.files for (p, k), n in f.errors_by.items()),
                    key=lambda r: -r[2])[:20]
                result["error_examples"] = [list(e) for f in summary.files
                                            for e in f.error_examples][:20]
                result["quarantine_examples"] = [list(e) for f in summary.files
                                                 for e in f.quarantine_examples][:20]
                js = result["summary"]
                if action == "check":
                    problems = js["schema_error_annotations"] + js["quarantined"]
                    result["ok"] = problems == 0
                    result["verdict"] = (
                        "Clean: no contract errors and no quarantined lines (`labelqa check` "
                        "would exit 0)." if result["ok"] else
                        f"Problems: {plural(js['schema_error_annotations'], 'annotation')} with "
                        f"contract errors, {plural(js['quarantined'], 'line')} to quarantine "
                        "(`labelqa check` "
                        "would exit 1).")
                else:
                    result["ok"] = True
                    result["verdict"] = (f"Ingested: {plural(js['loaded'], 'annotation')} "
                                         f"loaded, {plural(js['quarantined'], 'line')} "
                                         "quarantined.")
                status.update(label="Done", state="complete")
        if failure:
            st.error(failure[1])
            st.stop()
        st.session_state[P + "result"] = result
        # Rerun: an ingest shows its new data at once (caches are keyed on the database
        # generation), and the result below stays until the next run of an action.
        st.rerun()

last = st.session_state.get(P + "result")
if last:
    st.markdown(f"**Result of the last {'check' if last['action'] == 'check' else 'ingest'}**"
                f": {ui.md_escape(last['file'])}")
    (st.success if last["ok"] else st.warning)(last["verdict"])
    show_summary(last)
