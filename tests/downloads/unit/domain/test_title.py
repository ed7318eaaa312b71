"""The Title aggregate: a catalog entry with its studio and availability."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from downloads.domain import Invalid, NotFound, Policy, Title, TitleInfo
from downloads.domain.events import TitleSet
from tests.downloads.factories import START, refusal, start_service

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_setting_a_title_records_title_set_and_setting_it_the_same_way_again_records_nothing() -> None:
    title = Title("film")

    info = title.set(studio="restricted", downloadable=True, available_until=None, policy=Policy(), now=T0)
    assert title.pending_events == (TitleSet("film", "restricted", True, None, T0),)
    assert info == TitleInfo("film", "restricted")

    title.set(studio="restricted", downloadable=True, available_until=None, policy=Policy(), now=T0)
    assert len(title.pending_events) == 1


def test_a_title_of_an_unknown_studio_is_invalid() -> None:
    title = Title("film")

    with pytest.raises(Invalid) as caught:
        title.set(studio="pixar", downloadable=True, available_until=None, policy=Policy(), now=T0)

    assert caught.value.code == "UNKNOWN_STUDIO" and title.pending_events == ()


@pytest.mark.parametrize(
    ("info", "downloadable"),
    [
        (TitleInfo("t", "default"), True),
        (TitleInfo("t", "default", downloadable=False), False),
        (TitleInfo("t", "default", available_until=T0 + timedelta(seconds=1)), True),
        (TitleInfo("t", "default", available_until=T0), False),
        (TitleInfo("t", "default", available_until=T0 - timedelta(days=1)), False),
    ],
)
def test_a_title_is_downloadable_when_marked_so_and_before_its_available_until(
    info: TitleInfo, downloadable: bool
) -> None:
    assert info.downloadable_at(T0) is downloadable


def test_the_policys_demo_titles_are_in_the_catalog_until_the_api_changes_them() -> None:
    d = start_service()

    assert d.service.get_title("demo-title-2") == {
        "title_id": "demo-title-2",
        "studio": "restricted",
        "downloadable": True,
        "available_until": None,
    }
    d.title("demo-title-2", studio="default", available_until=START + timedelta(days=1))
    assert d.service.get_title("demo-title-2") == {
        "title_id": "demo-title-2",
        "studio": "default",
        "downloadable": True,
        "available_until": "2030-01-02T12:00:00Z",
    }


def test_an_unknown_title_answers_title_not_found_and_an_unknown_studio_is_invalid() -> None:
    d = start_service()

    assert refusal(lambda: d.service.get_title("nope"), NotFound).code == "TITLE_NOT_FOUND"
    assert refusal(lambda: d.title("film", studio="pixar"), Invalid).code == "UNKNOWN_STUDIO"
    assert refusal(lambda: d.service.get_title("film"), NotFound).code == "TITLE_NOT_FOUND"
