"""The status, rendered for people: an HTML page (server-side, no JavaScript, readable on a phone, refreshing
itself) and plain text for a terminal. Both render the dict that ``/status.json`` serves (pure: no I/O)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape
from typing import Any

REFRESH_SECONDS = 15

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;padding:0 .8em 2em;color:#1f2328;
background:#fff;line-height:1.4}
header{position:sticky;top:0;background:#f6f8fa;border-bottom:1px solid #d0d7de;margin:0 -.8em;
padding:.5em .8em}
h1{font-size:1.25em;margin:0}h2{font-size:1.05em;margin:1.4em 0 .4em}
.meta{color:#59636e;font-size:.85em}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.9em;min-width:100%}
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #d0d7de;vertical-align:top}
th{background:#f6f8fa;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}.warn{color:#9a6700;font-weight:600}
.empty{color:#59636e;font-style:italic}
code{font-size:.9em}
"""


# -- shared formatting ---------------------------------------------------------------------------------------


def when(epoch: Any, *, now: float) -> str:
    """`epoch` as a UTC time and how long ago: ``14:03:12 UTC (2m 5s ago)``."""
    if not isinstance(epoch, int | float):
        return "—"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))
    return f"{stamp} ({duration(now - epoch)} ago)"


def duration(seconds: Any) -> str:
    """``1h 2m``, ``3m 4s``, ``5s``."""
    if not isinstance(seconds, int | float):
        return "—"
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _pool_health(pool: dict[str, Any]) -> tuple[str, str]:
    """(word, css class) for a pool's health."""
    if not pool["healthy"]:
        return f"unhealthy: {pool['problem']}", "bad"
    if pool["outdated"]:
        return "outdated runner image", "warn"
    return "healthy", "ok"


def _installation_state(installation: dict[str, Any]) -> tuple[str, str]:
    if installation["out_of_service"]:
        return f"{installation['out_of_service']}: no runners", "bad"
    return ("suspended", "bad") if installation["suspended"] else ("active", "")


def _outdated(pool: dict[str, Any]) -> str:
    return "yes: exit code 7, update the image" if pool["outdated"] else "no"


def _step(start: Any, end: Any) -> str:
    if isinstance(start, int | float) and isinstance(end, int | float):
        return "+" + duration(end - start)
    return "—"


def sections(status: dict[str, Any]) -> list[tuple[str, list[str], list[list[tuple[str, str]]], str]]:
    """Every table of the status: (title, column names, rows of (text, css class), text when empty)."""
    now = float(status["generated_at"])
    pools = [
        [
            (p["name"], ""),
            (f"{p['active']}/{p['max_runners']}", "num"),
            (str(p["waiting"]), "num"),
            _pool_health(p),
            (_outdated(p), ""),
            (f"{p['mode']}, {p['image']}", ""),
        ]
        for p in status["pools"]
    ]
    warm = [
        [
            (w["pool"], ""),
            (w["scope"], ""),
            (str(w["min_idle"]), "num"),
            (
                "no change within a week"
                if w["next_change_at"] is None
                else f"to {w['next_min_idle']} at "
                + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(w["next_change_at"])),
                "",
            ),
        ]
        for w in status.get("warm", [])
    ]
    waiting = [
        [
            (j["repository"], ""),
            (j["name"] or str(j["id"]), ""),
            (", ".join(j["labels"]), ""),
            (when(j["waiting_since"], now=now), ""),
            (j["reason"], "bad" if j["reason"] in ("refused", "runner failing") else "warn"),
            (j["detail"], ""),
        ]
        for j in status["waiting"]
    ]
    refusals = [
        [
            (r["rule"], "bad"),
            (str(r["count"]), "num"),
            (f"{r['example_repository']} · {r['example_job']}", ""),
            (r["example_reason"], ""),
            (when(r["last_at"], now=now), ""),
        ]
        for r in status["refusals"]
    ]
    failing = [
        [
            (f["job"], ""),
            (f["pool"], ""),
            (f["repository"], ""),
            (f["reason"], "bad"),
            (when(f["since"], now=now), ""),
        ]
        for f in status["failing_runners"]
    ]
    installations = [
        [
            (i["account"], ""),
            (i["account_type"], ""),
            ("yes" if i["allowed"] else "no (GHAPP_ALLOWED_ACCOUNTS)", "ok" if i["allowed"] else "bad"),
            _installation_state(i),
            (
                "not used yet"
                if i["rate_limit_remaining"] is None
                else f"{i['rate_limit_remaining']} of {i['rate_limit']}",
                "num",
            ),
        ]
        for i in status["installations"]
    ]
    r = status["reconciler"]
    reconciler = [
        [("leader", ""), ("this replica" if r["leader"] else f"{r['holder'] or 'nobody'}", "")],
        [
            ("last pass", ""),
            (when(r["last_pass_at"], now=now) if r["last_pass_at"] else "none on this replica", ""),
        ],
        [("outcome", ""), (r["last_outcome"] or "—", "bad" if r["last_outcome"] == "failed" else "ok")],
        [
            ("fixed", ""),
            (", ".join(f"{k} {v}" for k, v in r["last_fixes"].items() if v) or "nothing to fix", ""),
        ],
        *([("error", "bad"), (e, "")] for e in r["last_errors"]),
    ]
    usage = []
    for key, label in (("last_24h", "last 24 h"), ("last_7d", "last 7 d")):
        window = status["usage"][key]
        note = "" if window["complete"] else f" (only {duration(window['covered_seconds'])}: ghapp restarted)"
        usage += [
            [(label + note, ""), (row["account"], ""), (row["pool"], ""), (duration(row["seconds"]), "num")]
            for row in window["rows"]
        ] or [[(label + note, ""), ("—", "empty"), ("—", "empty"), ("0s", "num")]]
    recent = [
        [
            (j["repository"], ""),
            (j["name"] or str(j["id"]), ""),
            (j["pool"] or ("refused" if j["refused_rule"] else "not ours"), ""),
            (when(j["queued_at"], now=now), ""),
            (_step(j["queued_at"], j["received_at"]), "num"),
            (_step(j["queued_at"], j["runner_job_created_at"]), "num"),
            (_step(j["queued_at"], j["pod_scheduled_at"]), "num"),
            (_step(j["queued_at"], j["pod_running_at"]), "num"),
            (_step(j["queued_at"], j["started_at"]), "num"),
            (_step(j["started_at"], j["completed_at"]), "num"),
            (j["conclusion"] or ("running" if j["started_at"] else "queued"), ""),
        ]
        for j in status["recent_jobs"]
    ]
    return [
        ("Pools", ["pool", "active/max", "waiting", "health", "outdated", "runs"], pools, "no pools"),
        ("Warm pools", ["pool", "scope", "min_idle now", "next change"], warm, "no warm entries"),
        (
            "Waiting jobs",
            ["repository", "job", "labels", "waiting since", "why", "detail"],
            waiting,
            "no job is waiting",
        ),
        (
            "Refusals by rule",
            ["rule", "count", "example", "reason", "last"],
            refusals,
            "no job was refused since start",
        ),
        (
            "Failing runners",
            ["Job", "pool", "repository", "reason", "since"],
            failing,
            "no runner is failing",
        ),
        (
            "Installations",
            ["account", "type", "allowed?", "state", "rate limit left"],
            installations,
            status["installations_error"] or "no installations",
        ),
        ("Reconciler", ["", ""], reconciler, ""),
        ("Runner time (this replica's memory)", ["window", "account", "pool", "runner time"], usage, ""),
        (
            "Recent jobs",
            [
                "repository",
                "job",
                "pool",
                "queued",
                "webhook",
                "runner Job",
                "pod scheduled",
                "pod running",
                "started",
                "ran",
                "result",
            ],
            recent,
            "no workflow job seen since start",
        ),
    ]


# -- HTML ----------------------------------------------------------------------------------------------------


def _table(columns: Sequence[str], rows: list[list[tuple[str, str]]], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{cls}">{escape(text)}</td>' if cls else f"<td>{escape(text)}</td>"
            for text, cls in row
        )
        + "</tr>"
        for row in rows
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def html(status: dict[str, Any]) -> str:
    """The status page."""
    now = float(status["generated_at"])
    stamp = escape(when(now, now=now).split(" (")[0])
    uptime = duration(now - status["started_at"])
    unhealthy = [p["name"] for p in status["pools"] if not p["healthy"]]
    summary = (
        f'<span class="bad">{len(unhealthy)} pool(s) unhealthy: {escape(", ".join(unhealthy))}</span>'
        if unhealthy
        else '<span class="ok">all pools healthy</span>'
    )
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        "<title>ghapp status</title>",
        f"<style>{_CSS}</style></head><body>",
        "<header><h1>ghapp status</h1>",
        f'<div class="meta">{summary} · {len(status["waiting"])} job(s) waiting · replica '
        f"<code>{escape(status['identity'])}</code> · ghapp {escape(status['version'])} · up "
        f"{uptime} · {stamp} · refreshes every "
        f'{REFRESH_SECONDS}s · <a href="status.json">JSON</a></div></header>',
    ]
    for title, columns, rows, empty in sections(status):
        anchor = title.split(" (")[0].lower().replace(" ", "-")
        parts.append(
            f'<section id="{anchor}"><h2>{escape(title)}</h2>{_table(columns, rows, empty)}</section>'
        )
    settings = "".join(
        f"<tr><th>{escape(name)}</th><td><code>{escape(str(value))}</code></td></tr>"
        for name, value in status["settings"].items()
    )
    parts.append(
        '<section id="settings"><h2>Settings (no secrets)</h2>'
        f'<div class="scroll"><table><tbody>{settings}</tbody></table></div></section>'
    )
    parts.append("</body></html>")
    return "\n".join(parts)


# -- text ----------------------------------------------------------------------------------------------------


def _text_table(columns: Sequence[str], rows: list[list[tuple[str, str]]], empty: str) -> list[str]:
    if not rows:
        return [f"  ({empty})"] if empty else []
    cells = [list(columns), *([text for text, _ in row] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]
    if any(columns):
        lines.insert(1, "  " + "  ".join("-" * width for width in widths))
    else:
        lines.pop(0)
    return lines


def text(status: dict[str, Any], *, only: str | None = None) -> str:
    """The status for a terminal; `only` keeps the sections whose title starts with it."""
    now = float(status["generated_at"])
    lines = []
    if only is None:
        lines.append(
            f"ghapp {status['version']} · replica {status['identity']} · "
            f"up {duration(now - status['started_at'])} · {when(now, now=now).split(' (')[0]}"
        )
    for title, columns, rows, empty in sections(status):
        if only is not None and not title.lower().startswith(only.lower()):
            continue
        lines += ["", title.upper(), *_text_table(columns, rows, empty)]
    return "\n".join(lines).lstrip("\n") + "\n"
