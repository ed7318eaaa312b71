"""The per-title window count: kept sorted and counted by bisection, it answers as a full sort did."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from downloads.domain import Account, Policy, Studio, TitleInfo, rules
from eskit import EventMetadata

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def sorted_count(times: list[datetime], *, limit: int, now: datetime, window: timedelta) -> rules.TitleQuota:
    """The reference: every time of the title filtered and sorted, as the rule was first written."""
    start = now - window
    counted = sorted(t for t in times if start < t)
    full = limit > 0 and len(counted) >= limit
    return rules.TitleQuota(limit, len(counted), counted[len(counted) - limit] + window if full else None)


offsets = st.integers(min_value=0, max_value=1000)  # hours after T0; small, so equal times happen


@given(
    added=st.lists(offsets, max_size=60),
    now=offsets,
    window_hours=st.integers(min_value=1, max_value=1200),
    limit=st.integers(min_value=0, max_value=8),
)
@settings(max_examples=400, deadline=None)
def test_a_window_count_over_kept_times_equals_the_count_over_every_time_sorted(
    added: list[int], now: int, window_hours: int, limit: int
) -> None:
    kept: list[datetime] = []
    for hours in added:  # in any order: times from other processes' clocks may arrive out of order
        rules.count_download(kept, T0 + timedelta(hours=hours))

    window = timedelta(hours=window_hours)
    at = T0 + timedelta(hours=now)
    every = [T0 + timedelta(hours=h) for h in added]

    assert kept == sorted(every)
    assert rules.window_quota(kept, limit=limit, now=at, window=window) == sorted_count(
        every, limit=limit, now=at, window=window
    )


@given(
    steps=st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.booleans()), max_size=40),
    window_hours=st.integers(min_value=1, max_value=2000),
    limit=st.integers(min_value=1, max_value=5),
)
@settings(max_examples=150, deadline=None)
def test_an_account_answers_its_title_quota_as_a_sort_of_its_downloads_would_under_any_window(
    steps: list[tuple[int, bool]], window_hours: int, limit: int
) -> None:
    """Downloads recorded under one policy are counted the same under any other window (what-if, a new policy)."""
    recording = Policy(studios={"default": Studio(), "s": Studio(max_downloads_per_title=0)})
    title = TitleInfo("film", "s")
    account = Account("a")
    account.open(plan="premium", policy=recording, now=T0)
    account.register_device(device_id="phone", model="m", policy=recording, now=T0)
    account.mark_saved(EventMetadata(recorded_at=T0))
    now, times = T0, []
    for gap, release in steps:
        now += timedelta(hours=gap)
        lic, created = account.acquire(device_id="phone", title_id="film", title=title, policy=recording, now=now)
        if created:
            times.append(now)
        if release:
            account.release(license_id=lic.license_id, now=now)
        account.mark_saved(EventMetadata(recorded_at=now))

    other = Policy(window=timedelta(hours=window_hours), studios={"s": Studio(max_downloads_per_title=limit)})
    restored = Account.from_snapshot("a", account.version, account.to_snapshot())
    for loaded in (account, restored):
        for later in (now, now + timedelta(hours=window_hours // 2), now + timedelta(hours=window_hours)):
            assert loaded.title_quota(title, other, later) == sorted_count(
                times, limit=limit, now=later, window=other.window
            )
