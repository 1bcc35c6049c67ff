"""The fault suite's shared harness: real poller processes against the simulator, the history of
every status change the simulator made, the end-of-scenario checks, and the one-line report.

A scenario tracks a few hundred simulator orders, starts `poller worker`/`poller beat` as plain
processes, moves the simulator's clock one stage at a time (each change is then observable: the
next stage waits until every order's change is recorded), injects its faults, and ends with
``Topology.finish``: (a) every change exactly once as an event, in per-item order; (b) every event
delivered at least once, verified, with a stable webhook-id, in per-item order; (c) no item stuck.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import TEST_SECRET_KEY
from worker.policy import PollPolicy
from worker.providers.billit import normalize
from worker.providers.registry import ProviderSet
from worker.service import PollerService
from worker.store.db import make_engine, make_sessionmaker
from worker.store.models import Delivery, DeliveryAttempt, Event, Item
from worker.subscriptions import Subscriptions

ROOT = Path(__file__).resolve().parents[2]
STATUS_EVENTS = ("status.observed", "status.changed")


def report(scenario: str, *, changes: int, events: int, deliveries_verified: int, duplicates: int,
           recover_s: float, extra: str = "") -> str:
    """Print the scenario's figures on one line, and append it to $FAULTS_REPORT when set.

    ``extra``: the scenario's own figures (``key=value`` words) after the common ones.
    """
    line = (f"FAULTS {scenario}: changes={changes} events={events} deliveries_verified={deliveries_verified} "
            f"duplicates={duplicates} recover_s={recover_s:.1f}" + (f" {extra}" if extra else ""))
    print(line, flush=True)
    path = os.environ.get("FAULTS_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")
    return line


def wait_until(what: str, check: Callable[[], Any], timeout: float, logs: Callable[[], str] = lambda: "") -> Any:
    """Re-check ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{logs()}")
        time.sleep(0.05)  # the re-check interval of a condition wait, not a synchronization


def poller_env(db_url: str, sim_url: str, home: Path, broker_url: str, **overrides: str) -> dict[str, str]:
    """The environment of the scenario's poller processes: fast ticks, short leases, quick retries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env.update({
        "POLLER_HOME": str(home), "POLLER_SECRET_KEYS": TEST_SECRET_KEY, "POLLER_DATABASE_URL": db_url,
        "POLLER_BROKER_URL": broker_url, "POLLER_TICK_SECONDS": "0.5", "POLLER_LEASE_SECONDS": "4",
        "POLLER_BACKOFF_BASE_SECONDS": "0.5", "POLLER_BACKOFF_MAX_SECONDS": "2", "POLLER_FAILING_AFTER": "1000",
        "POLLER_HTTP_TIMEOUT_SECONDS": "3", "POLLER_WORKER_CONCURRENCY": "2", "POLLER_POLL_THREADS": "4",
        "POLLER_DISPATCH_CHUNK": "8", "POLLER_JITTER_RATIO": "0.05", "POLLER_LOG_FORMAT": "json",
        "POLLER_BILLIT__BASE_URL": sim_url, "POLLER_BILLIT__API_KEY": "sim-billit-key",
        "POLLER_BILLIT__PARTY_ID": "1234", "POLLER_BILLIT__RATE_LIMIT_PER_SECOND": "1000",
        "POLLER_BREAKER_MIN_CALLS": "100000", "POLLER_METRICS_PORT": "0", "POLLER_BEAT_METRICS_PORT": "0",
        "POLLER_WEBHOOK_ALLOW_HTTP": "true", "POLLER_WEBHOOK_ALLOW_PRIVATE": "true",
        # Small delivery chunks: a chunk records its results when its last send is done, and one
        # that outlives its lease has them dropped and sent again (see the report of issue 10).
        "POLLER_WEBHOOK_TIMEOUT_SECONDS": "3", "POLLER_DELIVERY_LEASE_SECONDS": "4", "POLLER_DELIVERY_CHUNK": "10",
        "POLLER_WEBHOOK_RETRY_SCHEDULE": "0.5,1,1,2,2,3,3,5,5,5",
    })
    env.update(overrides)
    return env


class Processes:
    """Poller processes, each in its own session (so a kill reaches exactly what it names)."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env, self.logdir = env, logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.spawns: Counter[str] = Counter()
        self._all: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, role: str, **env: str) -> subprocess.Popen[bytes]:
        """Start `poller <role>` as ``name`` (a name used before gets a fresh process, same log)."""
        with open(self.logdir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "cli.main", role], env=dict(self.env, **env), cwd=ROOT,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        self.spawns[name] += 1
        self._all.append(proc)
        return proc

    def worker_ready(self, name: str) -> bool:
        """Whether the latest `poller worker` started as ``name`` has said it is ready (its pool is
        up: Celery gives up with "Could not start worker processes" if a child dies before)."""
        return self.log(name).count(' ready."') >= self.spawns[name] and self.procs[name].poll() is None

    def children(self, name: str) -> list[int]:
        """The live child processes of ``name``'s main process (a Celery worker's pool)."""
        pid = self.procs[name].pid
        try:
            return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def kill(self, name: str) -> None:
        """SIGKILL ``name``'s main process only; its orphaned pool children end on their own."""
        self.procs[name].kill()
        self.procs[name].wait(10)

    def log(self, name: str) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tails(self, lines: int = 25) -> str:
        """The last lines of every process's log, for a failure message."""
        return "\n".join(f"--- {n}\n" + "\n".join(self.log(n).splitlines()[-lines:]) for n in sorted(self.procs))

    def stop_all(self) -> None:
        """SIGKILL every process group this harness started (leftover pool children included)."""
        for proc in self._all:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(10)


class History:
    """Every status document each simulator order showed, as the simulator changed it.

    ``record`` samples the simulator after each move of its clock (time moves only then): a new
    document is a change the poller must turn into exactly one event (the policy's rule: fields,
    status or terminal differ). An order stops changing once terminal.
    """

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.docs: dict[str, list[Any]] = {}

    def add(self, ref: str) -> None:
        self.docs[ref] = []
        self._sample(ref)

    def record(self) -> None:
        for ref in self.docs:
            self._sample(ref)

    def _sample(self, ref: str) -> None:
        docs = self.docs[ref]
        if docs and docs[-1].terminal:
            return
        doc = normalize(self.sim.billit.order_body(int(ref)))
        last = docs[-1] if docs else None
        if last is None or (doc.status, doc.terminal, doc.fields) != (last.status, last.terminal, last.fields):
            docs.append(doc)

    def changes(self) -> int:
        return sum(len(d) for d in self.docs.values())


class _Stamped(list[Any]):
    """The receiver's arrival log, each entry with its wall-clock time (to explain a failure)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, value: Any) -> None:
        self.times.append(time.time())
        super().append(value)


class Topology:
    """One scenario: the simulator's orders tracked on a database, a verifying receiver subscribed,
    poller processes, and the checks at the end."""

    def __init__(self, name: str, *, db_url: str, sim: Any, receiver: Any, tmp_path: Path, broker_url: str,
                 interval: float = 2.0, stage_s: float = 10.0, **env: str) -> None:
        self.name, self.sim, self.receiver, self.interval, self.stage_s = name, sim, receiver, interval, stage_s
        self.engine = make_engine(db_url)
        self.sessions = make_sessionmaker(self.engine)
        self.service = PollerService(self.sessions, ProviderSet({}), PollPolicy())
        self.history = History(sim)
        self.items: dict[str, int] = {}  # order ref -> item id
        self.env = poller_env(db_url, sim.url, tmp_path / "home", broker_url, **env)
        self.procs = Processes(self.env, tmp_path)
        self.recover_s = 0.0
        _, secret = Subscriptions(self.sessions, allow_http=True, allow_private=True,
                                  known_providers=("billit",)).add(receiver.url)
        receiver.secrets = [secret]
        receiver.arrivals = _Stamped()

    # -- the run -------------------------------------------------------------------------

    def track(self, n: int, first_ref: int) -> None:
        """Create and track ``n`` orders; one in three is refused (terminal a stage earlier)."""
        for k in range(n):
            ref = first_ref + k
            self.sim.billit.create_order(ref, "refused" if k % 3 == 2 else "paid")
            self.items[str(ref)] = self.service.track("billit", str(ref), interval_s=self.interval).id
            self.history.add(str(ref))

    def advance(self) -> None:
        """Move the simulator one stage on: every order not yet final changes."""
        self.sim.clock.advance(self.stage_s)
        self.history.record()

    def missing(self) -> int:
        """How many changes are not yet recorded as events."""
        with self.sessions.begin() as s:
            got = dict(s.execute(select(Event.item_id, func.count()).where(Event.type.in_(STATUS_EVENTS))
                                 .group_by(Event.item_id)).all())
        return sum(max(0, len(docs) - got.get(self.items[ref], 0)) for ref, docs in self.history.docs.items())

    def caught_up(self) -> bool:
        return self.missing() == 0

    def wait_caught_up(self, what: str, timeout: float = 60.0) -> None:
        wait_until(what, self.caught_up, timeout, self.logs)

    def recovered(self, since: float, what: str, timeout: float = 90.0) -> float:
        """Wait until every change is recorded; note the time since ``since`` (a fault's end)."""
        self.wait_caught_up(what, timeout)
        took = time.monotonic() - since
        self.recover_s = max(self.recover_s, took)
        return took

    def logs(self) -> str:
        return f"missing={self.missing()}\n{self.procs.tails()}"

    def close(self) -> None:
        self.procs.stop_all()
        self.engine.dispose()

    # -- the checks ----------------------------------------------------------------------

    def finish(self, *, stuck_bound_s: float = 20.0, delivery_timeout: float = 60.0) -> str:
        """All three checks, then the report line."""
        self.wait_caught_up("every change recorded")
        events = self.check_events()
        verified, duplicates = self.check_deliveries(delivery_timeout)
        self.check_not_stuck(stuck_bound_s)
        return report(self.name, changes=self.history.changes(), events=events, deliveries_verified=verified,
                      duplicates=duplicates, recover_s=self.recover_s)

    def all_events(self) -> list[Event]:
        with self.sessions.begin() as s:
            return list(s.scalars(select(Event).order_by(Event.position)))

    def check_events(self) -> int:
        """(a) Each simulator change is exactly one event, in per-item order; nothing else."""
        events = self.all_events()
        by_item: dict[int, list[Event]] = defaultdict(list)
        for e in events:
            by_item[e.item_id].append(e)
        assert set(by_item) <= set(self.items.values()), "events for items nobody tracked"
        problems = []
        for ref, docs in self.history.docs.items():
            mine = sorted(by_item.get(self.items[ref], []), key=lambda e: e.seq)
            if [e.seq for e in mine] != list(range(1, len(mine) + 1)):
                problems.append(f"{ref}: seqs {[e.seq for e in mine]}")
            status = [e for e in mine if e.type in STATUS_EVENTS]
            want = [(("status.observed" if n == 0 else "status.changed"), d.status) for n, d in enumerate(docs)]
            got = [(e.type, e.data["status"]) for e in status]
            if got != want:
                problems.append(f"{ref}: events {got} != changes {want}")
        assert not problems, f"{len(problems)} items wrong:\n" + "\n".join(problems[:20])
        return len(events)

    def check_deliveries(self, timeout: float) -> tuple[int, int]:
        """(b) Every event delivered at least once, verified, webhook-id = event id, in item order.
        Returns (events verified, duplicate requests received)."""
        events = {e.id: e for e in self.all_events()}
        wait_until("every event delivered", lambda: set(events) <= {r.webhook_id for r in self.receiver.ok()},
                   timeout, lambda: self.procs.tails())
        ok = self.receiver.ok()
        for r in ok:
            assert r.verified_with == [0], f"{r.webhook_id} failed verification"
            body = r.json
            event = events[r.webhook_id]
            assert (body["id"], body["item_id"], body["seq"]) == (event.id, event.item_id, event.seq)
        # Arrival order (recorded before answering): event n+1 of an item is sent only after n
        # succeeded, so the first arrivals of an item's events come in seq order. A repeat (a send
        # whose result was not recorded, sent again) is what a receiver dedupes on webhook-id.
        firsts: dict[int, list[int]] = defaultdict(list)
        for wid in dict.fromkeys(self.receiver.arrivals):
            e = events.get(wid)
            assert e is not None, f"a request for unknown event {wid}"
            firsts[e.item_id].append(e.seq)
        for item_id, seqs in firsts.items():
            assert seqs == sorted(seqs), f"item {item_id}: first arrivals {seqs}\n" + self.explain(item_id, events)
        counts = Counter(r.webhook_id for r in ok)
        return len(counts), sum(c - 1 for c in counts.values())

    def explain(self, item_id: int, events: dict[str, Event]) -> str:
        """An item's requests as the receiver saw them and its delivery attempts as recorded."""
        arrivals = self.receiver.arrivals
        times = getattr(arrivals, "times", [0.0] * len(arrivals))
        lines = [f"arrived {datetime.fromtimestamp(t, UTC).time()} seq {events[w].seq}"
                 for w, t in zip(arrivals, times, strict=True) if w in events and events[w].item_id == item_id]
        with self.sessions.begin() as s:
            rows = s.execute(select(Delivery.id, Delivery.lease_id, Event.seq, DeliveryAttempt.attempted_at,
                                    DeliveryAttempt.latency_ms, DeliveryAttempt.outcome, DeliveryAttempt.error)
                             .join(Event, Event.position == Delivery.event_position)
                             .join(DeliveryAttempt, DeliveryAttempt.delivery_id == Delivery.id, isouter=True)
                             .where(Delivery.item_id == item_id).order_by(DeliveryAttempt.id)).all()
        return "\n".join(lines + [f"recorded {tuple(r)}" for r in rows])

    def check_not_stuck(self, bound_s: float) -> None:
        """(c) Every active item is polled again within its interval plus ``bound_s``; none is in a
        state other than active or terminal."""
        mark = datetime.now(UTC)
        with self.sessions.begin() as s:
            states = Counter(s.scalars(select(Item.state)))
        assert set(states) <= {"active", "terminal"}, states

        def stale() -> list[int]:
            with self.sessions.begin() as s:
                return list(s.scalars(select(Item.id).where(
                    Item.state == "active", (Item.last_polled_at.is_(None)) | (Item.last_polled_at < mark))))

        wait_until("every active item polled again", lambda: not stale(), self.interval * 1.1 + bound_s,
                   lambda: f"stale items: {stale()[:20]}\n{self.procs.tails()}")
        assert datetime.now(UTC) - mark < timedelta(seconds=self.interval * 1.1 + bound_s)
