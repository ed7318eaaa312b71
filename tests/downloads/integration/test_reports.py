"""The downloads report refuses, rather than cuts, an answer larger than it may hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from downloads.application import AcquireLicense, OpenAccount, RegisterDevice
from downloads.bootstrap import bootstrap, open_read_side
from downloads.readmodels import reports
from downloads.readmodels.readside import ReadSide
from downloads.settings import Settings


def test_a_report_with_more_rows_than_its_limit_is_refused_not_cut(tmp_path: Path) -> None:
    runtime = bootstrap(Settings(store=f"sqlite:///{tmp_path / 'd.db'}"))
    read_side = open_read_side(runtime)
    assert isinstance(read_side, ReadSide)
    try:
        service = runtime.service
        service.handle(OpenAccount("acct", "standard"))
        service.handle(RegisterDevice("acct", "d1", "phone"))
        for title in ("demo-title-1", "demo-title-2"):
            service.handle(AcquireLicense("acct", "d1", title))
        while read_side.step():
            pass
        rows = read_side.runner.tables("download_reports")
        options = {"granularity": "day", "studio": None, "title_id": None, "start": None, "end": None}

        found = reports.report(rows, **options, demo_studio=lambda _t: "default", limit=2)
        assert [row["title_id"] for row in found] == ["demo-title-1", "demo-title-2"]
        with pytest.raises(reports.ReportTooLarge):
            reports.report(rows, **options, demo_studio=lambda _t: "default", limit=1)
    finally:
        read_side.close()
        runtime.close()
