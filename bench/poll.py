"""Benchmark the poll path end to end: polls/s, CPU per poll and memory of every poller process.

The poller runs as it is deployed (`poller run`, or `poller worker` + `poller beat` with a Redis
of their own) and polls Billit orders from a loopback endpoint that cannot be the bottleneck:
nginx answering from memory for the throughput figures, a Python event loop that answers after a
delay for the latency-bound one. Polls are counted at the endpoint. CPU is user + system time of
the poller's whole process tree (Redis included); memory is the sum of PSS.

    .venv/bin/python bench/poll.py --db sqlite                    # unchanged polls, `poller run`
    .venv/bin/python bench/poll.py --db sqlite --changed          # every poll a change
    .venv/bin/python bench/poll.py --db postgresql --mode split   # worker + beat on PostgreSQL
    .venv/bin/python bench/poll.py --latency 0.2 --items 10000 --interval 60 --seconds 180
    .venv/bin/python bench/poll.py --seconds 1200 --sample 60     # memory over ~1,000,000 polls

The rate limit of the Billit account is lifted for the run (POLLER_BILLIT__RATE_LIMIT_PER_SECOND):
the providers document none, and the default of 5/s would be the only thing measured.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from endpoint import DelayedEndpoint, Nginx  # noqa: E402


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants still alive."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def role(p: psutil.Process) -> str:
    """What a process is: redis, or the `poller` command it runs."""
    try:
        cmd, name = p.cmdline(), p.name()
    except psutil.NoSuchProcess:
        return "gone"
    if name.startswith("poller-"):  # forked by `poller run` (cli/forked.py)
        return name.removeprefix("poller-")
    if cmd and "redis" in cmd[0]:
        return "redis"
    return cmd[cmd.index("cli.main") + 1] if "cli.main" in cmd else Path(cmd[0]).name if cmd else "?"


def cpu_seconds(procs: list[psutil.Process], seen: dict[int, tuple[str, float]]) -> float:
    """Update ``seen`` (pid -> role, CPU seconds) and return the total, keeping processes that exited."""
    for p in procs:
        try:
            t = p.cpu_times()
            seen[p.pid] = (seen[p.pid][0] if p.pid in seen else role(p), t.user + t.system)
        except psutil.NoSuchProcess:
            pass
    return sum(cpu for _, cpu in seen.values())


def pss_by_role(procs: list[psutil.Process]) -> dict[str, float]:
    """Proportional set size by process role, MB."""
    roles: dict[str, float] = {}
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            name = role(p)
            roles[name] = roles.get(name, 0.0) + p.memory_full_info().pss / 1e6
    return roles


def pss_mb(procs: list[psutil.Process]) -> float:
    """Summed proportional set size, MB."""
    return sum(pss_by_role(procs).values())


def poller(*args: str, env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a `poller` command with ``env``."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the child
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def run(args: argparse.Namespace, home: Path) -> dict[str, object]:
    """One configuration: start the endpoint and the poller, track, warm up, measure."""
    from cli.embedded import EmbeddedRedis
    from worker.store.db import create_database, drop_database

    endpoint = DelayedEndpoint(args.latency) if args.latency else Nginx(home / "nginx", changed=args.changed)
    endpoint.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env.update({
        "POLLER_HOME": str(home / "var"), "POLLER_SECRET_KEYS": Fernet.generate_key().decode(),
        "POLLER_BILLIT__BASE_URL": endpoint.url, "POLLER_BILLIT__API_KEY": "bench",
        "POLLER_BILLIT__PARTY_ID": "1", "POLLER_BILLIT__RATE_LIMIT_PER_SECOND": "100000",
        "POLLER_BILLIT__RATE_LIMIT_BURST": "1000", "POLLER_TICK_SECONDS": str(args.tick),
        "POLLER_API_PORT": "0", "POLLER_METRICS_PORT": "0", "POLLER_BEAT_METRICS_PORT": "0",
        "POLLER_LOG_LEVEL": "WARNING",
    })
    for pair in args.env:
        key, _, value = pair.partition("=")
        env[key] = value
    db_url = None
    if args.db == "postgresql":
        db_url = create_database(args.pg_url, f"poller_bench_{uuid.uuid4().hex[:8]}")
        env["POLLER_DATABASE_URL"] = db_url
    redis = None
    procs: list[subprocess.Popen[bytes]] = []
    log = home / "poller.log"
    try:
        if args.mode == "split":
            redis = EmbeddedRedis(home / "redis").start()
            env["POLLER_BROKER_URL"] = redis.url
        items = home / "items.csv"
        items.write_text("provider,ref,interval\n" + "".join(
            f"billit,{100000 + i},{args.interval}\n" for i in range(args.items)))
        subprocess.run([sys.executable, "-m", "cli.main", "migrate"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, "-m", "cli.main", "track", "--file", str(items)], cwd=ROOT, env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if args.mode == "run":
            procs.append(poller("run", env=env, log=log))
        else:
            procs += [poller("worker", env=env, log=log), poller("beat", env=env, log=log)]
        roots = [p.pid for p in procs] + ([redis.proc.pid] if redis and redis.proc else [])

        def everything() -> list[psutil.Process]:
            return [p for pid in roots for p in tree(pid)]

        def database() -> list[psutil.Process]:
            # PostgreSQL's backends serving this benchmark's database: shown, not counted as the poller's.
            name = db_url.rsplit("/", 1)[-1] if db_url else None
            found = []
            for p in psutil.process_iter(["cmdline"]) if name else []:
                with contextlib.suppress(psutil.Error):
                    if name in " ".join(p.info["cmdline"] or []):
                        found.append(p)
            return found

        time.sleep(args.warmup)
        seen: dict[int, tuple[str, float]] = {}
        db_seen: dict[int, tuple[str, float]] = {}
        db0 = cpu_seconds(database(), db_seen)
        cpu0, n0, t0 = cpu_seconds(everything(), seen), endpoint.requests(), time.monotonic()
        before = dict(seen)
        samples = [(0.0, 0, pss_mb(everything()))]
        while (elapsed := time.monotonic() - t0) < args.seconds:
            time.sleep(min(args.sample, args.seconds - elapsed))
            samples.append((time.monotonic() - t0, endpoint.requests() - n0, pss_mb(everything())))
        cpu1, n1, t1 = cpu_seconds(everything(), seen), endpoint.requests(), time.monotonic()
        db1 = cpu_seconds(database(), db_seen)
        polls = n1 - n0
        by_role: dict[str, float] = {}
        for pid, (name, cpu) in seen.items():
            by_role[name] = by_role.get(name, 0.0) + cpu - before.get(pid, (name, 0.0))[1]
        result: dict[str, object] = {
            "polls": polls, "polls_per_s": polls / (t1 - t0),
            "cpu_ms_per_poll": (cpu1 - cpu0) * 1000 / max(polls, 1),
            "cpu_cores": (cpu1 - cpu0) / (t1 - t0), "pss_mb": samples[-1][2],
            "pss_first_mb": samples[1][2] if len(samples) > 1 else samples[0][2],
            "processes": len(everything()), "samples": samples,
            "pss_by_role": pss_by_role(everything()),
            "cpu_by_role": {k: v * 1000 / max(polls, 1) for k, v in sorted(by_role.items())},
            "db_cpu_ms_per_poll": (db1 - db0) * 1000 / max(polls, 1),
        }
        if isinstance(endpoint, DelayedEndpoint):
            result.update(endpoint.gaps(args.interval + args.tick, since=t0))
        return result
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        if redis:
            redis.stop()
        endpoint.stop()
        if db_url:
            drop_database(args.pg_url, db_url)


def main() -> None:
    """Parse arguments, run one configuration, print a Markdown row and the memory samples."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("TEST_DATABASE_URL"))
    parser.add_argument("--mode", choices=["run", "split"], default=None,
                        help="`poller run` (default on SQLite) or worker + beat (default on PostgreSQL)")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--tick", type=float, default=1.0)
    parser.add_argument("--changed", action="store_true", help="every poll returns a changed order")
    parser.add_argument("--latency", type=float, default=0.0, help="the endpoint answers after this many seconds")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between memory samples")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra poller setting")
    args = parser.parse_args()
    args.mode = args.mode or ("run" if args.db == "sqlite" else "split")
    if args.db == "postgresql" and not args.pg_url:
        parser.error("--db postgresql needs --pg-url or TEST_DATABASE_URL")
    if not args.latency and not shutil.which("nginx"):
        parser.error("nginx is needed for the loopback endpoint (apt-get install nginx-light)")
    with tempfile.TemporaryDirectory(prefix="poll-bench-") as tmp:
        r = run(args, Path(tmp))
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}; {args.db} `{args.mode}`, {args.items} items every {args.interval:g} s, "
          f"{'changed' if args.changed else 'unchanged'}, endpoint latency {args.latency:g} s")
    print("| polls/s | CPU ms/poll | CPU cores | PSS MB (first sample -> last) | processes |")
    print(f"| {r['polls_per_s']:.0f} | {r['cpu_ms_per_poll']:.2f} | {r['cpu_cores']:.2f} | "
          f"{r['pss_first_mb']:.0f} -> {r['pss_mb']:.0f} | {r['processes']} |")
    print("CPU ms/poll by process: " + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_by_role"].items())  # type: ignore[attr-defined]
          + (f"; PostgreSQL's backends (not counted above) {r['db_cpu_ms_per_poll']:.2f}"
             if args.db == "postgresql" else ""))
    print("PSS MB by process: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["pss_by_role"].items())))  # type: ignore[attr-defined]
    if "gap_p99" in r:
        print(f"gaps between polls of one item: median {r['gap_median']:.1f} s, p99 {r['gap_p99']:.1f} s, "
              f"max {r['gap_max']:.1f} s; within the interval + one tick {r['covered']:.2%}")
    if len(r["samples"]) > 3:  # type: ignore[arg-type]
        print("memory: " + ", ".join(f"{t:.0f} s/{n} polls: {m:.0f} MB" for t, n, m in r["samples"]))  # type: ignore[union-attr]


if __name__ == "__main__":
    main()
