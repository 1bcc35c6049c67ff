"""How much a busy Python thread slows another thread's SQLite reads (the GIL's convoy effect).

Why beat's daily prune runs as a process of its own (tasks/maintenance.py): in a worker's threads
pool its Python work would share the GIL with the polls' and deliveries' database calls. pysqlite
releases the GIL around each step of a statement and must take it back after: behind a thread that
keeps the GIL busy, each of those waits up to the interpreter's switch interval (5 ms).

    .venv/bin/python bench/gil_convoy.py            # prints median / p95 ms, alone and beside a busy thread
"""

from __future__ import annotations

import math
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROWS, READ = 200_000, 300


def timed_reads(conn: sqlite3.Connection, n: int = 50) -> list[float]:
    """``n`` reads of READ rows (three statements each, as a claim makes), in ms."""
    out = []
    for _ in range(n):
        started = time.perf_counter()
        for _ in range(3):
            conn.execute("SELECT id, sub, item FROM d WHERE due <= 1 ORDER BY due, id LIMIT ?", (READ,)).fetchall()
        out.append((time.perf_counter() - started) * 1000)
    return sorted(out)


def main() -> None:
    """Time the reads alone, then beside a thread running Python code."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "convoy.db", check_same_thread=False)
        conn.execute("CREATE TABLE d (id INTEGER PRIMARY KEY, due REAL, sub INTEGER, item INTEGER)")
        conn.executemany("INSERT INTO d (due, sub, item) VALUES (?, ?, ?)",
                         ((i % 1000, i % 7, i) for i in range(ROWS)))
        conn.execute("CREATE INDEX ix_due ON d (due, id)")
        conn.commit()
        alone = timed_reads(conn)
        stop = threading.Event()

        def busy() -> None:
            x = 0
            while not stop.is_set():
                for i in range(1000):
                    x += i * i

        thread = threading.Thread(target=busy)
        thread.start()
        try:
            beside = timed_reads(conn)
        finally:
            stop.set()
            thread.join()
        conn.close()

    def line(values: list[float]) -> str:
        return f"median {statistics.median(values):.1f} ms, p95 {values[math.ceil(0.95 * len(values)) - 1]:.1f} ms"

    print(f"# Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, switch interval "
          f"{sys.getswitchinterval() * 1000:.0f} ms; {READ} rows read three times per sample, 50 samples")
    print(f"alone:               {line(alone)}")
    print(f"beside a busy thread: {line(beside)}")


if __name__ == "__main__":
    main()
