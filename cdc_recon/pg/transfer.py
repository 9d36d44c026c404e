"""Streams COPY text from one connection into another through an OS pipe.

The change log lives in the source database and the ledger in the target (different
servers, possibly): the sweeper moves a window's entries with `COPY ... TO STDOUT` on the
source and `COPY ... FROM STDIN` on the target at the same time, the producer on a thread
writing into a pipe the target's COPY reads from. Nothing is held in memory beyond the
pipe's buffers, and psycopg2 releases the GIL while either server works.

    >>> rows = pipe_copy(lambda out: source_cur.copy_expert(copy_out, out),
    ...                  target_cur, "COPY stage FROM STDIN")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

CHUNK = 1 << 20


class RowWriter:
    """What the producer writes to: counts the writes (psycopg2 writes one row per call
    on COPY TO) and remembers the last one, for keyset batching."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.rows = 0
        self.last = b""

    def write(self, data: bytes) -> int:
        self.rows += 1
        self.last = data
        return self._out.write(data)


Producer = Callable[[RowWriter], None]


def pipe_copy(produce: Producer, cursor: Any, copy_in: str, *, chunk: int = CHUNK) -> int:
    """Run `produce(writer)` on a thread while `cursor` COPYs its output in; returns the
    number of writes (rows). An error on either side is raised here, after both ended;
    the caller rolls the target transaction back."""
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb", buffering=chunk)
    writer = RowWriter(os.fdopen(write_fd, "wb", buffering=chunk))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            produce(writer)
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)
        finally:
            try:
                writer._out.close()
            except OSError:  # the reader is gone: its error is the one that matters
                pass

    thread = threading.Thread(target=run, name="cdcr-copy", daemon=True)
    thread.start()
    try:
        cursor.copy_expert(copy_in, reader, size=chunk)
    finally:
        reader.close()  # unblocks a producer still writing, if the COPY in failed
        thread.join()
    if failure:
        raise failure[0]
    return writer.rows


def copy_lines(cursor: Any, copy_in: str, lines: Sequence[str]) -> int:
    """COPY already-encoded text lines in (rows built in Python, e.g. from Kafka)."""
    if not lines:
        return 0
    cursor.copy_expert(copy_in, io.StringIO("\n".join(lines) + "\n"))
    return len(lines)
