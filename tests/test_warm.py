"""The warm config and the pure schedule module: what min_idle is now, and when it next changes."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ghapp import cli, warm
from ghapp.config import WarmEntry, load_settings
from ghapp.errors import ConfigError


def at(text: str) -> float:
    """An instant written in UTC, e.g. ``2026-03-02T07:30``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def entry(*windows: dict[str, Any], min_idle: int = 0) -> WarmEntry:
    return WarmEntry.model_validate({"organization": "acme", "min_idle": min_idle, "schedule": list(windows)})


WEEKDAYS_BERLIN = {
    "days": ["mon", "tue", "wed", "thu", "fri"],
    "start": "08:00",
    "end": "19:00",
    "timezone": "Europe/Berlin",
    "min_idle": 2,
}


def test_office_hours_in_berlin_winter_and_summer() -> None:
    office = entry(WEEKDAYS_BERLIN)
    # Monday 2 March 2026, CET (UTC+1): open 07:00-18:00 UTC
    assert warm.min_idle_at(office, at("2026-03-02T06:59")) == 0
    assert warm.min_idle_at(office, at("2026-03-02T07:00")) == 2
    assert warm.min_idle_at(office, at("2026-03-02T17:59")) == 2
    assert warm.min_idle_at(office, at("2026-03-02T18:00")) == 0
    # Monday 6 July 2026, CEST (UTC+2): open 06:00-17:00 UTC
    assert warm.min_idle_at(office, at("2026-07-06T06:00")) == 2
    assert warm.min_idle_at(office, at("2026-07-06T17:00")) == 0
    # Saturday: none at all
    assert warm.min_idle_at(office, at("2026-03-07T10:00")) == 0


def test_next_change_over_the_weekend() -> None:
    office = entry(WEEKDAYS_BERLIN)
    change = warm.next_change(office, at("2026-03-06T18:30"))  # Friday evening, closed
    assert change is not None
    assert (iso(change.at), change.min_idle) == ("2026-03-09T07:00:00", 2)  # Monday 08:00 CET
    change = warm.next_change(office, at("2026-03-09T07:00"))
    assert change is not None
    assert (iso(change.at), change.min_idle) == ("2026-03-09T18:00:00", 0)


def test_next_change_across_the_spring_forward() -> None:
    # Berlin goes 02:00 CET -> 03:00 CEST at 01:00 UTC on Sunday 29 March 2026
    office = entry(WEEKDAYS_BERLIN)
    change = warm.next_change(office, at("2026-03-27T18:00"))  # Friday 19:00 CET
    assert change is not None
    assert iso(change.at) == "2026-03-30T06:00:00"  # Monday 08:00 CEST
    # a window starting inside the skipped hour opens when the clock jumps over its start
    gap = entry(
        {"days": ["sun"], "start": "02:30", "end": "04:00", "timezone": "Europe/Berlin", "min_idle": 1}
    )
    change = warm.next_change(gap, at("2026-03-29T00:00"))
    assert change is not None
    assert (iso(change.at), change.min_idle) == ("2026-03-29T01:00:00", 1)
    assert warm.min_idle_at(gap, at("2026-03-29T00:59:59")) == 0
    assert warm.min_idle_at(gap, change.at) == 1


def test_next_change_across_the_fall_back() -> None:
    # Berlin goes 03:00 CEST -> 02:00 CET at 01:00 UTC on Sunday 25 October 2026: 02:00-02:30 happens twice
    twice = entry(
        {"days": ["sun"], "start": "02:00", "end": "02:30", "timezone": "Europe/Berlin", "min_idle": 3}
    )
    moments = []
    moment = at("2026-10-24T23:00")
    while (change := warm.next_change(twice, moment)) is not None and change.at < at("2026-10-26T00:00"):
        moments.append((iso(change.at), change.min_idle))
        moment = change.at
    assert moments == [
        ("2026-10-25T00:00:00", 3),  # 02:00 CEST
        ("2026-10-25T00:30:00", 0),  # 02:30 CEST
        ("2026-10-25T01:00:00", 3),  # the clock falls back to 02:00 CET
        ("2026-10-25T01:30:00", 0),  # 02:30 CET
    ]


def test_window_crossing_midnight_belongs_to_its_start_day() -> None:
    night = entry(
        {"days": ["fri"], "start": "22:00", "end": "06:00", "timezone": "UTC", "min_idle": 4}, min_idle=1
    )
    assert warm.min_idle_at(night, at("2026-03-06T21:59")) == 1  # Friday
    assert warm.min_idle_at(night, at("2026-03-06T22:00")) == 4
    assert warm.min_idle_at(night, at("2026-03-07T05:59")) == 4  # Saturday morning
    assert warm.min_idle_at(night, at("2026-03-07T06:00")) == 1
    assert warm.min_idle_at(night, at("2026-03-07T23:00")) == 1  # Saturday night: not listed
    assert warm.min_idle_at(night, at("2026-03-06T03:00")) == 1  # Friday morning: Thursday not listed
    change = warm.next_change(night, at("2026-03-06T23:00"))
    assert change is not None
    assert (iso(change.at), change.min_idle) == ("2026-03-07T06:00:00", 1)


def test_overlapping_windows_take_the_largest_and_end_of_day() -> None:
    both = entry(
        {"days": ["mon"], "start": "00:00", "end": "24:00", "timezone": "UTC", "min_idle": 1},
        {"days": ["mon"], "start": "12:00", "end": "13:00", "timezone": "Asia/Kolkata", "min_idle": 5},
    )
    assert warm.min_idle_at(both, at("2026-03-02T06:29")) == 1
    assert warm.min_idle_at(both, at("2026-03-02T06:30")) == 5  # 12:00 IST
    assert warm.min_idle_at(both, at("2026-03-02T23:59")) == 1
    assert warm.min_idle_at(both, at("2026-03-03T00:00")) == 0
    change = warm.next_change(both, at("2026-03-02T07:00"))
    assert change is not None
    assert (iso(change.at), change.min_idle) == ("2026-03-02T07:30:00", 1)


def test_no_schedule_never_changes() -> None:
    assert warm.next_change(entry(min_idle=3), at("2026-03-02T00:00")) is None
    assert warm.min_idle_at(entry(min_idle=3), at("2026-03-02T00:00")) == 3
    always = entry(
        {"days": list(warm.WEEKDAYS), "start": "00:00", "end": "24:00", "timezone": "UTC", "min_idle": 2}
    )
    assert warm.next_change(always, at("2026-03-02T00:00")) is None


def test_warm_names_never_look_like_workflow_jobs() -> None:
    name = warm.warm_name(prefix="ghapp", pool="linux", scope_key="org:acme", slot=0)
    assert warm.is_warm_name(name, prefix="ghapp")
    assert not warm.is_warm_name("ghapp-123456", prefix="ghapp")
    assert not name.removeprefix("ghapp-").isdigit()
    assert name == warm.warm_name(prefix="ghapp", pool="linux", scope_key="org:ACME", slot=0)
    assert name != warm.warm_name(prefix="ghapp", pool="gpu", scope_key="org:acme", slot=0)
    longest = warm.warm_name(prefix="p" * 20, pool="x" * 30, scope_key="repo:a/b", slot=99_999)
    assert len(longest) <= 63
    taken = {warm.warm_name(prefix="ghapp", pool="linux", scope_key="org:acme", slot=slot) for slot in (0, 2)}
    free = warm.free_slots(prefix="ghapp", pool="linux", scope_key="org:acme", taken=taken, count=2)
    assert [n.rsplit("-", 1)[1] for n in free] == ["1", "3"]


def test_deficit_keeps_the_buffer_on_top_of_queued_jobs() -> None:
    assert warm.deficit(3, warm.Supply(idle=0, starting=0, queued=0)) == 3
    assert warm.deficit(3, warm.Supply(idle=1, starting=1, queued=0)) == 1
    assert warm.deficit(3, warm.Supply(idle=3, starting=0, queued=2)) == 2  # two of them are taken
    assert warm.deficit(0, warm.Supply(idle=5, starting=0, queued=0)) == 0
    assert warm.surplus(2, warm.Supply(idle=5, starting=0, queued=1)) == 2
    assert warm.surplus(2, warm.Supply(idle=1, starting=4, queued=0)) == 1  # only idle ones go
    assert warm.surplus(2, warm.Supply(idle=2, starting=0, queued=0)) == 0


POOL = """
pools:
  - name: linux
    labels: [self-hosted, linux]
    max_runners: 6
{extra}
"""


def window(**fields: str) -> str:
    """A warm entry of one window in flow YAML; `fields` replace the window's defaults."""
    values = {
        "days": "[mon]",
        "start": "'08:00'",
        "end": "'09:00'",
        "timezone": "UTC",
        "min_idle": "1",
        **fields,
    }
    inner = ", ".join(f"{key}: {value}" for key, value in values.items())
    return f"- {{organization: a, schedule: [{{{inner}}}]}}"


def write(tmp_path: Path, extra: str) -> dict[str, str]:
    path = tmp_path / "pools.yaml"
    path.write_text(POOL.format(extra=extra))
    return {"GHAPP_POOLS_FILE": str(path)}


def test_the_issue_example_parses(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            """    warm_recycle_seconds: 1800
    warm:
      - organization: acme
        min_idle: 0
        schedule:
          - {days: [mon, tue, wed, thu, fri], start: "08:00", end: "19:00", timezone: Europe/Berlin,
             min_idle: 2}
      - repository: alice/dotfiles
        min_idle: 1""",
        )
    )
    pool = settings.pools[0]
    assert [e.scope_key for e in pool.warm] == ["org:acme", "repo:alice/dotfiles"]
    assert pool.warm[0].schedule[0].min_idle == 2
    assert pool.warm_recycle_seconds == 1800
    assert load_settings(write(tmp_path, "")).pools[0].warm_recycle_seconds == 3600


@pytest.mark.parametrize(
    ("warm_yaml", "expected"),
    [
        ("- {organization: acme, repository: acme/x}", "pool 'linux' (pools.0.warm.0): name exactly one"),
        ("- {min_idle: 1}", "pool 'linux' (pools.0.warm.0): name exactly one"),
        ("- {organization: acme, min_idle: 7}", "warm[0].min_idle: 7 idle runners exceed max_runners"),
        ("- {organization: acme, min_idle: 4}\n      - {repository: a/b, min_idle: 3}", "together exceed"),
        ("- {organization: acme}\n      - {organization: ACME}", "warm[1]: org:ACME is named twice"),
        ("- {organization: 'not/a login'}", "pools.0.warm.0.organization"),
        ("- {repository: nothing}", "pools.0.warm.0.repository"),
        (window(start="'8:00'"), "pools.0.warm.0.schedule.0.start"),
        (window(end="'08:00'"), "start and end are the same time"),
        (window(end="'24:01'"), "pools.0.warm.0.schedule.0.end"),
        (window(timezone="Mars/Olympus"), "pools.0.warm.0.schedule.0.timezone"),
        (window(days="[monday]"), "pools.0.warm.0.schedule.0.days"),
        (window(days="[]"), "pools.0.warm.0.schedule.0.days"),
        (window(days="[mon, mon]"), "days lists a day twice"),
        ("- {organization: a, min_idle: -1}", "pools.0.warm.0.min_idle"),
    ],
)
def test_bad_warm_entries_name_pool_and_field(tmp_path: Path, warm_yaml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, f"    warm:\n      {warm_yaml}"))
    assert "GHAPP_POOLS_FILE" in str(error.value)
    assert expected in str(error.value)


def test_warm_scope_must_be_inside_the_pool_scope(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"warm\[0\]: other is outside the pool's organizations"):
        load_settings(write(tmp_path, "    organizations: [acme]\n    warm:\n      - {organization: other}"))
    with pytest.raises(ConfigError, match=r"warm\[0\]: org:acme is outside the pool's repositories"):
        load_settings(write(tmp_path, "    repositories: [acme/*]\n    warm:\n      - {organization: acme}"))
    settings = load_settings(
        write(tmp_path, "    repositories: [acme/*]\n    warm:\n      - {repository: acme/app}")
    )
    assert settings.pools[0].warm[0].repository == "acme/app"


def test_render_shows_what_the_warm_config_means_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = write(
        tmp_path,
        """    warm:
      - organization: acme
        schedule:
          - {days: [mon, tue, wed, thu, fri], start: "08:00", end: "19:00", timezone: Europe/Berlin,
             min_idle: 2}
      - {repository: alice/dotfiles, min_idle: 1}""",
    )
    settings = load_settings(environ)
    assert (
        cli.render(settings, payload_file=cli.SAMPLE_PAYLOAD, pool_name="linux", now=at("2026-03-02T10:00"))
        == 0
    )
    header = [line for line in capsys.readouterr().out.splitlines() if line.startswith("# warm:")]
    assert header == [
        "# warm: pool linux, org:acme: min_idle now 2; next change at 2026-03-02T18:00:00Z"
        " (2026-03-02 19:00 Europe/Berlin) to 0",
        "# warm: pool linux, repo:alice/dotfiles: min_idle now 1; no schedule",
    ]
    cli.render(settings, payload_file=cli.SAMPLE_PAYLOAD, pool_name="linux", now=at("2026-03-07T10:00"))
    assert (
        "# warm: pool linux, org:acme: min_idle now 0; next change at 2026-03-09T07:00:00Z"
        " (2026-03-09 08:00 Europe/Berlin) to 2"
    ) in capsys.readouterr().out
