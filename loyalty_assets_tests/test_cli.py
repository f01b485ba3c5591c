"""The loyalty-assets command: sample data, and one-line errors for bad input."""

from __future__ import annotations

import pytest

from loyalty_assets import cli
from loyalty_assets.domain.ingest import SourceFile, ingest_drop
from loyalty_assets.domain.storage import LocalStore


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOYALTY_HOME", str(tmp_path))
    monkeypatch.delenv("LOYALTY_LANDING_URI", raising=False)
    return tmp_path


def test_sample_data_writes_one_drop_per_day_in_the_landing_zone(home, capsys):
    assert (
        cli.main(["sample-data", "--customers", "300", "--end", "2026-11-27", "--days", "2", "--format", "csv.gz"]) == 0
    )
    landing = LocalStore(home / "landing")
    keys = landing.list_keys("")
    assert sorted({key.split("/")[1] for key in keys}) == ["dt=2026-11-26", "dt=2026-11-27"]
    assert all(key.endswith((".csv.gz", "/_manifest.json")) for key in keys)
    assert sum(key.endswith("/_manifest.json") for key in keys) == 4  # one per drop folder
    keys = [key for key in keys if key.endswith(".csv.gz")]
    loyalty = [
        SourceFile(key, landing.get_bytes(key)) for key in keys if key.startswith("loyalty_history/dt=2026-11-27")
    ]
    activity = [
        SourceFile(key, landing.get_bytes(key)) for key in keys if key.startswith("flight_activity/dt=2026-11-27")
    ]
    assert len(ingest_drop(loyalty, activity, drop_date="2026-11-27").loyalty) > 0
    assert "wrote 4 files for 2 drops" in capsys.readouterr().out


def test_run_without_a_drop_for_the_date_is_one_clear_line(home, capsys):
    assert cli.main(["run", "--as-of", "2026-11-27"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "no drop dated 2026-11-27" in error and "sample-data" in error


def test_bad_environment_value_is_one_clear_line(home, monkeypatch, capsys):
    monkeypatch.setenv("LOYALTY_ENV", "staging")
    assert cli.main(["run", "--as-of", "2026-11-27"]) == 2
    assert capsys.readouterr().err.strip() == "loyalty-assets: LOYALTY_ENV='staging': use one of local, aws"


def test_malformed_date_is_rejected_by_the_parser(home, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--as-of", "2026-02-30"])
    assert exit_info.value.code == 2
    assert "'2026-02-30' is not a date (YYYY-MM-DD)" in capsys.readouterr().err
