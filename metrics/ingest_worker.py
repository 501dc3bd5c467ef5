"""A worker process of `metrics.ingest`: checks blocks of native lines.

Started as ``python -m metrics.ingest_worker`` (a plain subprocess, not
`multiprocessing`, so no caller's main module is re-imported and no process running
DuckDB threads is forked). Protocol on stdin/stdout, each message a length-prefixed
pickle: first the `ProjectConfig`, then ``(path, offset, length, first_line, build)``
per block of whole lines, each answered in order by ``("ok", Chunk)`` or ``("error",
traceback text)``.
"""

from __future__ import annotations

import gc
import pickle
import struct
import sys
import traceback
from typing import BinaryIO

HEADER = struct.Struct("<Q")


def send(stream: BinaryIO, obj: object) -> None:
    data = pickle.dumps(obj, protocol=5)
    stream.write(HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def receive(stream: BinaryIO) -> object:
    """The next message, or EOFError when the other side has closed."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        raise EOFError
    (size,) = HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def main() -> int:
    from metrics.ingest import Checker, _native_events, _range_lines, check_events

    # A worker only checks blocks and makes no reference cycles; the cyclic GC's
    # passes over each block's containers cost a sixth of its time.
    gc.disable()
    src, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        checker = Checker(receive(src))
    except EOFError:
        return 0
    files: dict[str, BinaryIO] = {}
    while True:
        try:
            path, offset, length, first, build = receive(src)
        except EOFError:
            return 0
        try:
            fh = files.get(path)
            if fh is None:
                fh = files[path] = open(path, "rb")  # noqa: SIM115 - open while we run
            lines = _range_lines(fh, offset, length)
            reply = ("ok", check_events(checker, _native_events(lines, first), build))
        except Exception:  # noqa: BLE001 - reported to the parent, which raises it
            reply = ("error", traceback.format_exc())
        send(out, reply)


if __name__ == "__main__":
    sys.exit(main())
