"""The policy file: TOML that replaces the default policy, refused with the bad key named."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from downloads.adapters.policy_file import PolicyError, load_policy, parse_duration
from downloads.application import OpenAccount
from downloads.bootstrap import bootstrap
from downloads.domain import CatalogTitle, Plan, Policy, Studio
from downloads.settings import Settings


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_without_a_file_the_policy_is_the_documented_default() -> None:
    policy = load_policy(None)

    assert policy.plans == {"basic": Plan(1), "standard": Plan(2), "premium": Plan(6)}
    assert policy.max_active_downloads == 100
    assert policy.max_devices == 20
    assert policy.window == timedelta(days=365)
    assert policy.studios == {
        "default": Studio(
            license_duration=timedelta(days=30),
            playback_window=timedelta(hours=48),
            max_downloads_per_title=0,
            renewals_count_as_downloads=True,
        ),
        "restricted": Studio(max_downloads_per_title=3),
    }
    assert policy.titles == {"demo-title-1": CatalogTitle("default"), "demo-title-2": CatalogTitle("restricted")}


def test_an_empty_file_keeps_every_default(tmp_path: Path) -> None:
    assert load_policy(_file(tmp_path, "")) == Policy()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("48h", timedelta(hours=48)),
        ("15m", timedelta(minutes=15)),
        ("2s", timedelta(seconds=2)),
    ],
)
def test_durations_are_a_whole_number_and_a_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text, "some.key") == expected


@pytest.mark.parametrize("text", ["30", "1.5h", "30 days", "d", "-1d", "30w", ""])
def test_other_durations_are_refused_naming_the_key(text: str) -> None:
    with pytest.raises(PolicyError, match=r"^some\.key: "):
        parse_duration(text, "some.key")


def test_a_full_file_sets_every_part_of_the_policy(tmp_path: Path) -> None:
    policy = load_policy(
        _file(
            tmp_path,
            """
[plans.solo]
download_devices = 1
[plans.family]
download_devices = 4

[devices]
max_active_downloads = 25

[accounts]
max_devices = 8

[downloads]
window = "90d"

[studios.default]
license_duration = "7d"
playback_window = "15m"

[studios.strict]
max_downloads_per_title = 2
renewals_count_as_downloads = false

[titles.film]
studio = "strict"
""",
        )
    )

    assert policy.plans == {"solo": Plan(1), "family": Plan(4)}
    assert policy.max_active_downloads == 25
    assert policy.max_devices == 8
    assert policy.window == timedelta(days=90)
    assert policy.studios["default"] == Studio(
        license_duration=timedelta(days=7), playback_window=timedelta(minutes=15)
    )
    assert policy.titles == {"film": CatalogTitle("strict")}


def test_a_studio_inherits_every_key_it_does_not_set_from_the_default_studio(tmp_path: Path) -> None:
    policy = load_policy(
        _file(
            tmp_path,
            """
[studios.default]
license_duration = "10d"
max_downloads_per_title = 9
[studios.strict]
max_downloads_per_title = 2
[titles.film]
studio = "strict"
""",
        )
    )

    assert policy.studio("strict") == Studio(
        license_duration=timedelta(days=10),
        playback_window=timedelta(hours=48),
        max_downloads_per_title=2,
        renewals_count_as_downloads=True,
    )


def test_studios_that_leave_out_restricted_keep_only_the_demo_titles_whose_studio_exists(tmp_path: Path) -> None:
    policy = load_policy(_file(tmp_path, '[studios.default]\nlicense_duration = "2s"\n'))

    assert policy.studios == {"default": Studio(license_duration=timedelta(seconds=2))}
    assert policy.titles == {"demo-title-1": CatalogTitle("default")}


def test_a_title_of_an_unknown_studio_is_refused_naming_the_title(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"titles\.film\.studio.*'pixar'"):
        load_policy(_file(tmp_path, '[titles.film]\nstudio = "pixar"\n'))


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[studios.default]\nlicense_duration = "a month"\n', "studios.default.license_duration"),
        ("[studios.strict]\nplayback_window = 48\n", "studios.strict.playback_window"),
        ('[downloads]\nwindow = "0d"\n', "downloads.window"),
        ('[plans.basic]\ndownload_devices = "two"\n', "plans.basic.download_devices"),
        ("[plans.basic]\ndownload_devices = -1\n", "plans.basic.download_devices"),
        ("[plans.basic]\ndownload_devices = true\n", "plans.basic.download_devices"),
        ("[plans.basic]\n", "plans.basic.download_devices"),
        ("[devices]\nmax_active_downloads = 0\n", "devices.max_active_downloads"),
        ("[studios.default]\nmax_downloads_per_title = 1.5\n", "studios.default.max_downloads_per_title"),
        ('[studios.default]\nrenewals_count_as_downloads = "yes"\n', "studios.default.renewals_count_as_downloads"),
        ("[devices]\nmax_downloads = 3\n", "devices.max_downloads"),
        ('[studios.default]\nlicence_duration = "30d"\n', "studios.default.licence_duration"),
        ("[plans.basic]\ndownload_devices = 1\ndevices = 2\n", "plans.basic.devices"),
        ('[titles.film]\nstudio = "default"\nregion = "eu"\n', "titles.film.region"),
        ("[catalog]\n", "policy.catalog"),
        ("plans = 3\n", "plans"),
        ("studios = []\n", "studios"),
    ],
)
def test_a_bad_key_is_refused_with_the_key_named(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(_file(tmp_path, text))

    assert str(caught.value).startswith(f"{key}:")


def test_a_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, "[plans.basic\ndownload_devices = 1\n")

    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(path)


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nowhere\.toml"):
        load_policy(tmp_path / "nowhere.toml")


def test_the_service_enforces_the_policy_file_it_is_started_with(tmp_path: Path) -> None:
    path = _file(tmp_path, '[plans.solo]\ndownload_devices = 1\n[studios.default]\nlicense_duration = "2s"\n')

    app = bootstrap(Settings(store="memory://", policy=str(path)))

    assert app.policy.plans == {"solo": Plan(1)}
    assert app.service.handle(OpenAccount("acct-1", "solo")).body["device_limit"] == 1
    app.close()


@pytest.mark.parametrize("value", ["3000000d", "99999999999999999999d", "87601h"])
def test_a_duration_too_long_for_any_license_is_refused_naming_the_key(tmp_path: Path, value: str) -> None:
    with pytest.raises(PolicyError, match=r"studios\.default\.license_duration") as refused:
        load_policy(_file(tmp_path, f'[studios.default]\nlicense_duration = "{value}"\n'))
    assert "3650 days" in str(refused.value)
