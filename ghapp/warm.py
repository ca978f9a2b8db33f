"""Pure: what a pool's ``warm`` entries ask for at a given time, and the names of warm runners.

A window is open on its `days` from `start` to `end`, both wall-clock times in its time zone (so it follows
daylight saving time); a window whose end is not after its start crosses midnight and closes on the next
day. Outside every window an entry asks for its own ``min_idle``; where windows overlap, the largest wins.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from ghapp.config import WEEKDAYS, Pool, WarmEntry, WarmWindow, minutes_of

DAY = 24 * 60
HORIZON_DAYS = 8
"""How far ahead `next_change` looks: every weekly schedule changes within a week, if at all."""
WARM_MARK = "w"
"""Warm runner names are ``<prefix>-w<hash>-<slot>``: never all digits, so never a workflow job's name."""


def _open(window: WarmWindow, local: datetime) -> bool:
    """Whether `window` is open at the wall-clock time `local` (in the window's zone)."""
    minute = local.hour * 60 + local.minute
    start, end = minutes_of(window.start), minutes_of(window.end)
    today = WEEKDAYS[local.weekday()] in window.days
    if start < end:
        return today and start <= minute < end
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7] in window.days
    return (today and minute >= start) or (yesterday and minute < end)


def min_idle_at(entry: WarmEntry, when: float) -> int:
    """The idle runners `entry` asks for at epoch second `when`."""
    open_windows = [
        window.min_idle
        for window in entry.schedule
        if _open(window, datetime.fromtimestamp(when, window.zone))
    ]
    return max(open_windows) if open_windows else entry.min_idle


@dataclass(frozen=True, slots=True)
class Change:
    """The next time an entry's ``min_idle`` changes, and to what."""

    at: float
    min_idle: int


def next_change(entry: WarmEntry, when: float) -> Change | None:
    """The first moment after `when` at which `entry` asks for another number (None: not within a week).

    The answer is exact to the second: between two candidate instants (a window's start or end in local
    time — both occurrences when the clock falls back — and every UTC offset change of the zones) nothing
    changes, so the first candidate with another value is the change.
    """
    now = min_idle_at(entry, when)
    for candidate in sorted(_candidates(entry, when)):
        value = min_idle_at(entry, candidate)
        if value != now:
            return Change(candidate, value)
    return None


def _candidates(entry: WarmEntry, when: float) -> set[float]:
    found: set[float] = set()
    for name in {window.timezone for window in entry.schedule}:
        found |= _offset_changes(ZoneInfo(name), when)
    for window in entry.schedule:
        zone = window.zone
        first = datetime.fromtimestamp(when, zone).date() - timedelta(days=1)
        for day in range(HORIZON_DAYS + 2):
            date = first + timedelta(days=day)
            for minute in (minutes_of(window.start), minutes_of(window.end)):
                local = datetime(date.year, date.month, date.day, tzinfo=zone) + timedelta(minutes=minute)
                naive = local.replace(tzinfo=None)
                for fold in (0, 1):
                    found.add(naive.replace(tzinfo=zone, fold=fold).timestamp())
    return {moment for moment in found if when < moment <= when + HORIZON_DAYS * 86400}


def _offset_changes(zone: ZoneInfo, when: float) -> set[float]:
    """The instants within the horizon at which `zone`'s UTC offset changes (to the second)."""
    changes: set[float] = set()
    step = 3600.0
    moment = float(int(when))
    offset = datetime.fromtimestamp(moment, zone).utcoffset()
    while moment < when + HORIZON_DAYS * 86400:
        following = moment + step
        if datetime.fromtimestamp(following, zone).utcoffset() != offset:
            low, high = moment, following  # offset(low) is the old one, offset(high) the new one
            while high - low > 1:
                middle = (low + high) // 2
                if datetime.fromtimestamp(middle, zone).utcoffset() == offset:
                    low = middle
                else:
                    high = middle
            changes.add(high)
            offset = datetime.fromtimestamp(following, zone).utcoffset()
        moment = following
    return changes


def scope_hash(*, pool: str, scope_key: str) -> str:
    """Ten hex digits naming a pool's warm runners of one scope (case-insensitive scope)."""
    return hashlib.sha256(f"{pool}\0{scope_key.lower()}".encode()).hexdigest()[:10]


def warm_name(*, prefix: str, pool: str, scope_key: str, slot: int) -> str:
    """The runner / Job / Secret name of warm slot `slot` of a pool in a scope (a DNS label ≤ 63).

    Deterministic, so two leaders filling the same slot meet 409 AlreadyExists instead of doubling the buffer.
    """
    return f"{prefix}-{WARM_MARK}{scope_hash(pool=pool, scope_key=scope_key)}-{slot}"


def free_slots(*, prefix: str, pool: str, scope_key: str, taken: set[str], count: int) -> list[str]:
    """The names of the `count` lowest warm slots whose names are not in `taken` (Jobs that exist)."""
    names: list[str] = []
    slot = 0
    while len(names) < count:
        name = warm_name(prefix=prefix, pool=pool, scope_key=scope_key, slot=slot)
        if name not in taken:
            names.append(name)
        slot += 1
    return names


def is_warm_name(name: str, *, prefix: str) -> bool:
    """Whether `name` is a warm runner's (not a workflow job's) name."""
    rest = name.removeprefix(f"{prefix}-")
    return rest != name and rest.startswith(WARM_MARK)


@dataclass(frozen=True, slots=True)
class Target:
    """What one warm entry asks for now."""

    pool: Pool
    entry: WarmEntry
    min_idle: int
    change: Change | None


def targets(pools: tuple[Pool, ...], when: float) -> list[Target]:
    """Every warm entry of every pool, with what it asks for at `when` and when that changes next."""
    return [
        Target(pool, entry, min_idle_at(entry, when), next_change(entry, when))
        for pool in pools
        for entry in pool.warm
    ]


def describe(target: Target) -> str:
    """What a warm entry means now, in one line: ``pool linux, org:acme: min_idle now 2; next change at
    2026-11-30T18:00:00Z (2026-11-30 19:00 Europe/Berlin) to 0``."""
    text = f"pool {target.pool.name}, {target.entry.scope_key}: min_idle now {target.min_idle}"
    if target.change is None:
        return text + ("; no change within a week" if target.entry.schedule else "; no schedule")
    moment = datetime.fromtimestamp(target.change.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    local = [
        datetime.fromtimestamp(target.change.at, window.zone).strftime(f"%Y-%m-%d %H:%M {window.timezone}")
        for window in target.entry.schedule
        if window.timezone != "UTC"
    ]
    where = f" ({local[0]})" if local else ""
    return f"{text}; next change at {moment}{where} to {target.change.min_idle}"


@dataclass(frozen=True, slots=True)
class Supply:
    """A pool's runners in one scope, as GitHub and the cluster show them."""

    idle: int
    """Registered, online and not busy."""
    starting: int
    """Runner Jobs that are active but whose runner is not registered and online yet."""
    queued: int
    """Queued jobs of the pool in the scope (they will take idle or starting runners)."""


def deficit(min_idle: int, supply: Supply) -> int:
    """How many runners to start so that `min_idle` stay idle on top of what queued jobs will take."""
    return max(0, min_idle + supply.queued - supply.idle - supply.starting)


def surplus(min_idle: int, supply: Supply) -> int:
    """How many idle runners are beyond `min_idle` and the queued jobs (only idle ones are ever removed)."""
    return max(0, min(supply.idle, supply.idle + supply.starting - supply.queued - min_idle))
