"""How items and events look on a terminal and as JSON lines."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from worker.dates import iso_z
from worker.store.models import Event, Item
from worker.views import event_dict, item_dict

__all__ = ["event_dict", "item_dict", "items_table", "event_json", "event_line"]


def items_table(items: list[Item]) -> str:
    """A plain-text table of items."""
    head = ("ID", "PROVIDER", "ACCOUNT", "KIND", "REF", "STATE", "STATUS", "LAST POLL", "NEXT POLL",
            "FAILS", "LAST ERROR")
    rows = [head] + [(
        str(i.id), i.provider, i.account, i.kind, i.ref, i.state, i.last_status or "-",
        _short(i.last_polled_at), _short(i.next_poll_at), str(i.consecutive_failures),
        (i.last_error or "-")[:60],
    ) for i in items]
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _short(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def event_json(event: Event) -> str:
    """One JSON object on one line."""
    return json.dumps(event_dict(event), separators=(",", ":"), sort_keys=False)


def event_line(event: Event) -> str:
    """A one-line human summary of an event."""
    d = event.data
    head = (f"{_short(event.created_at)}  {event.id}  item {event.item_id} #{event.seq}  "
            f"{event.type:<15} {d.get('provider')} {d.get('kind')} {d.get('ref')}")
    if event.type == "status.changed":
        changes = ", ".join(f"{c['path']}: {_brief(c['from'])} -> {_brief(c['to'])}" for c in d["changes"][:4])
        more = f" (+{len(d['changes']) - 4} more)" if len(d["changes"]) > 4 else ""
        return f"{head}  {d.get('previous_status')} -> {d.get('status')}  [{changes}{more}]"
    if event.type in ("poll.failing", "item.gone"):
        return f"{head}  {d.get('error')}"
    return f"{head}  {d.get('status')}" + ("  (terminal)" if d.get("terminal") else "")


def _brief(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 50 else text[:47] + "..."


def status_table(st: Any) -> str:
    """`poller status` as text."""
    lines = [f"status at {iso_z(st.now)}", "", "items"]
    states = sorted({state for by in st.items.values() for state in by})
    if st.items:
        head = ["PROVIDER", *[s.upper() for s in states]]
        rows = [head] + [[p, *[str(by.get(s, 0)) for s in states]] for p, by in sorted(st.items.items())]
        widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    else:
        lines.append("  none tracked")
    tick = (f"{iso_z(st.last_tick)} (took {st.last_tick_seconds * 1000:.1f} ms)" if st.last_tick
            else "none yet (is beat running?)")
    lines += [
        "",
        f"overdue             {st.overdue} (oldest by {st.most_overdue_seconds:.1f} s)",
        f"failing             {st.failing} (and {st.retrying} retrying after a failure)",
        f"stuck               {st.stuck}",
        "refused accounts    " + ("; ".join(st.auth_failed) or "none"),
        f"deliveries pending  {st.deliveries_pending} (oldest {st.oldest_pending_seconds:.1f} s)",
        "subscriptions       " + (", ".join(f"{k} {v}" for k, v in sorted(st.subscriptions.items())) or "none"),
        f"last dispatch tick  {tick}",
    ]
    if st.store is not None:
        rows = ", ".join(f"{t} {'~' if t in st.store.estimated else ''}{n}" for t, n in st.store.rows.items())
        size = "unknown" if st.store.bytes is None else f"{st.store.bytes / 1e6:.1f} MB"
        lines.append(f"database            {size}: {rows}")
        if st.store.cache_bytes is not None and st.store.hot_bytes is not None:
            cache = (f"database cache      shared_buffers {st.store.cache_bytes / 1e6:.1f} MB for "
                     f"{st.store.hot_bytes / 1e6:.1f} MB of items and schedules")
            lines.append(cache + ("  SMALL: every poll reads past it; raise shared_buffers (docs/sizing.md)"
                                  if st.store.cache_short else ""))
        lines += [f"oldest event        {iso_z(st.oldest_event) if st.oldest_event else 'none'}",
                  f"last prune          {iso_z(st.last_prune) if st.last_prune else 'never'}"]
    for sw in st.sweeps:
        state = f"ok {iso_z(sw['ok_at'])}" if sw["ok_at"] else "not yet ok"
        if sw["failures"]:
            state += f"; failing {sw['failures']} times: {sw['error']}"
        if sw.get("degraded_at"):
            state += f"; DEGRADED since {iso_z(sw['degraded_at'])} (items at their own intervals)"
        lines.append(f"sweep {sw['provider']}/{sw['account']}".ljust(20) + f"{state}; watermark {sw['watermark']}")
    if st.capacity:
        lines += ["", "capacity (polls per second the active items need, and the account's rate limit)"]
        for need in st.capacity:
            limit = "no limit" if need.limit_per_s is None else f"limit {need.limit_per_s:g}/s"
            line = f"  {need.provider}/{need.account}: {need.required_per_s:.2f}/s for {need.items} items, {limit}"
            if need.over:
                line += (f"  OVER: each item is polled about {need.slowdown:.1f}x less often than asked "
                         f"(raise {need.setting} if the provider allows)")
            lines.append(line)
    return "\n".join(lines)
