"""The online scoring API: a real ``loyalty-assets serve`` process on a free loopback port.

One module fixture runs the pipeline on a small simulated population (ingest, segmentation,
churn training and the weekly scoring, through Dagster), with a second churn version registered
for the hot-reload test. With 3,000 members a candidate may miss its quality gates, so the
fixture promotes the trained version with ``model promote --force``: the gates are not what is
tested here, the serving of whatever the registry holds is.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import boto3
import dagster as dg
import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from loyalty_assets import cli
from loyalty_assets.definitions import build_defs
from loyalty_assets.domain import registry
from loyalty_assets.domain.scoring import load_action_table
from loyalty_assets.domain.sample_data import SampleConfig, write_drops
from loyalty_assets.domain.drop_commits import read_commit
from loyalty_assets.domain.storage import LocalStore, S3Store, parquet_bytes_to_dataframe
from loyalty_assets.domain.periods import quarter_start
from loyalty_assets.runner import QUIET_CONSOLE, execute_job, instance_for
from loyalty_assets.serving.champions import ServingState, _member_scorer
from loyalty_assets.serving.compiled import _column_transformer, compile_churn_model
from loyalty_assets.serving.scoring import ScoreRequest, score_request
from loyalty_assets.settings import load_settings
from loyalty_assets_tests.api_process import running_api
from loyalty_assets_tests.dagster_helpers import QUICK_CHURN_TRAINING
from loyalty_assets_tests.ports import free_port

AS_OF = date(2026, 11, 27)
MONTH = "2026-10-01"
WEEK = "2026-11-23"
SNAPSHOT = "2026-10"
KEYS = ("first-test-key", "second-test-key")
ACTIVITY_FIELDS = [
    "year",
    "month",
    "flights_booked",
    "flights_with_companions",
    "total_flights",
    "distance",
    "points_accumulated",
    "points_redeemed",
    "dollar_cost_points_redeemed",
]
LOYALTY_FIELDS = [
    "loyalty_number",
    "country",
    "province",
    "city",
    "postal_code",
    "gender",
    "education",
    "salary",
    "marital_status",
    "loyalty_card",
    "clv",
    "enrollment_type",
    "enrollment_year",
    "enrollment_month",
    "cancellation_year",
    "cancellation_month",
]


def _promote(version: str) -> None:
    assert cli.main(["model", "promote", "--version", version, "--force", "--reason", "serving test"]) == 0


def _churn_versions(lake: LocalStore) -> set[str]:
    return {entry["version"] for entry in registry.versions(lake, "churn")}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    path = tmp_path_factory.mktemp("serving_home")
    month_end = AS_OF.replace(day=1) - timedelta(days=1)
    quarter_end = quarter_start(AS_OF) - timedelta(days=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOYALTY_HOME", str(path))
        patch.delenv("DAGSTER_HOME", raising=False)
        write_drops(LocalStore(path / "landing"), [quarter_end, month_end, AS_OF], SampleConfig(customers=3000))
        settings = load_settings()
        defs = build_defs(settings)
        instance = instance_for(settings)
        for drop in (quarter_end, month_end, AS_OF):
            execute_job(defs, instance, "daily_ingest_job", drop.isoformat())
        execute_job(defs, instance, "quarterly_segmentation_job", "2026-07-01")
        lake = LocalStore(path / "lake")
        # The monthly job trains the first version (its gates may stop its promotion), a second
        # seed a challenger for the hot-reload test; both the quick recipe.
        quick = {"ops": {"churn_model_candidate": {"config": QUICK_CHURN_TRAINING}}}
        defs.resolve_job_def("monthly_churn_training_job").execute_in_process(
            instance=instance, partition_key=MONTH, run_config={**QUIET_CONSOLE, **quick}, raise_on_error=False
        )
        (champion,) = _churn_versions(lake)
        dg.materialize(
            list(defs.assets) + list(defs.asset_checks),
            selection=["churn_model_candidate"],
            partition_key=MONTH,
            resources=defs.resources,
            instance=instance,
            run_config={**QUIET_CONSOLE, "ops": {"churn_model_candidate": {"config": {**QUICK_CHURN_TRAINING, "seed": 11}}}},
            raise_on_error=False,
        )
        (challenger,) = _churn_versions(lake) - {champion}
        _promote(champion)
        execute_job(defs, instance, "weekly_scoring_job", WEEK)
        yield path, champion, challenger


def _server_environment(path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LOYALTY_HOME": str(path),
        "LOYALTY_API_KEYS": ",".join(KEYS),
        "LOYALTY_API_RELOAD_SECONDS": "0.5",
        "LOYALTY_API_MAX_BODY_BYTES": "20000",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }


@pytest.fixture(scope="module")
def server(home):
    path, _, _ = home
    log_path = path / "serve.log"
    with running_api(_server_environment(path), log_path) as port:
        yield port, log_path


class Client:
    """One keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, port: int, key: str | None = KEYS[0]):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        all_headers = {**self.headers, **(headers or {})}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        self.connection.request(method, path, body=body, headers=all_headers)
        response = self.connection.getresponse()
        payload = response.read()
        return response.status, json.loads(payload), dict(response.getheaders())

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, body: dict):
        return self.request("POST", path, json.dumps(body).encode())


def _plain(value):
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return value.item() if isinstance(value, np.generic) else value


def _score_bodies(path: Path) -> dict[int, dict]:
    """A POST body per member from the week's drop: attributes and the months up to the snapshot."""
    lake = LocalStore(path / "lake")
    tables = read_commit(lake, str(AS_OF)).tables
    loyalty = parquet_bytes_to_dataframe(lake.get_bytes(tables["raw_loyalty_history"]))
    activity = parquet_bytes_to_dataframe(lake.get_bytes(tables["raw_flight_activity"]))
    activity = activity[activity["year"] * 12 + activity["month"] <= 2026 * 12 + 10]
    months = {
        member: [{name: _plain(row[name]) for name in ACTIVITY_FIELDS} for row in rows.to_dict("records")]
        for member, rows in activity.groupby("loyalty_number")
    }
    bodies = {}
    for row in loyalty.to_dict("records"):
        body = {name: _plain(row[name]) for name in LOYALTY_FIELDS}
        bodies[body["loyalty_number"]] = {
            **body,
            "as_of": SNAPSHOT,
            "week": str(WEEK),
            "activity": months.get(body["loyalty_number"], []),
        }
    return bodies


def _week(path: Path) -> pd.DataFrame:
    return parquet_bytes_to_dataframe(LocalStore(path / "lake").get_bytes(f"churn_predictions/{WEEK}.parquet"))


def test_score_matches_the_batch_row_for_every_member_of_the_week(home, server):
    path, champion, _ = home
    port, _ = server
    week = _week(path)
    bodies = _score_bodies(path)
    client = Client(port)
    mismatches = []
    for row in week.to_dict("records"):
        status, answer, headers = client.post("/v1/score", bodies[row["loyalty_number"]])
        assert status == 200, answer
        same = (
            abs(answer["churn_risk_pct"] - row["churn_risk_pct"]) <= 1e-6
            and answer["risk_tier"] == row["risk_tier"]
            and answer["segment"] == row["segment"]
            and answer["recommended_action"] == row["recommended_action"]
            and answer["experiment_arm"] == row["experiment_arm"]
            and answer["top_reasons"] == row["top_reasons"]
            and answer["snapshot_month"] == "2026-10-01"
        )
        if not same:
            mismatches.append((row, answer))
        assert answer["churn_model_version"] == headers["x-churn-model-version"] == champion
    assert len(week) > 2000
    record = registry.record(LocalStore(path / "lake"), "churn", champion)
    merged = {merge["merged"] for merge in record["merged_tiers"]}
    assert set(week["risk_tier"]) == {"Low", "Medium", "High", "Critical"} - merged
    assert mismatches == []


def test_member_lookup_returns_the_week_row_and_404_for_unknown(home, server):
    path, champion, _ = home
    port, _ = server
    row = _week(path).iloc[7]
    status, answer, _ = Client(port).get(f"/v1/members/{row['loyalty_number']}")
    assert status == 200
    assert answer["week"] == WEEK
    assert answer["churn_risk_pct"] == row["churn_risk_pct"]
    assert (answer["risk_tier"], answer["segment"], answer["recommended_action"]) == (
        row["risk_tier"],
        row["segment"],
        row["recommended_action"],
    )
    assert answer["churn_model_version"] == champion
    assert set(answer) >= {"top_reasons", "segmentation_model_version"}
    assert Client(port).get("/v1/members/999999999")[0] == 404
    status, answer, _ = Client(port).get("/v1/members/abc")
    assert status == 422 and answer["detail"][0]["loc"] == ["path", "loyalty_number"]


def test_keys_are_required_and_never_echoed(server):
    port, log_path = server
    assert Client(port, key=None).get("/v1/model")[0] == 401
    status, answer, headers = Client(port, key="wrong-key").get("/v1/model")
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert Client(port, key=KEYS[1]).get("/v1/model")[0] == 200
    assert Client(port, key=None).get("/healthz")[0] == 200
    log = log_path.read_text()
    assert not any(key in log for key in KEYS) and "wrong-key" not in log
    assert "Traceback" not in log
    access = [json.loads(line) for line in log.splitlines() if line.startswith('{"method"')]
    assert {"latency_ms", "status", "churn_model_version", "segmentation_model_version"} <= set(access[-1])
    assert any(line["status"] == 401 for line in access)


def test_invalid_bodies_get_field_level_422_and_large_ones_413(home, server):
    path, _, _ = home
    port, _ = server
    client = Client(port)
    body = next(iter(_score_bodies(path).values()))

    def errors(changed: dict) -> list:
        status, answer, _ = client.post("/v1/score", changed)
        assert status == 422, answer
        return [(tuple(error["loc"]), error["msg"]) for error in answer["detail"]]

    bad_month = {**body, "activity": [{**body["activity"][0], "month": 13}]}
    assert errors(bad_month)[0][0] == ("body", "activity", 0, "month")
    without_card = {key: value for key, value in body.items() if key != "loyalty_card"}
    assert errors(without_card)[0][0] == ("body", "loyalty_card")
    twice = {**body, "activity": [body["activity"][-1], body["activity"][-1]]}
    assert ("body", "activity", 1, "month") in [location for location, _ in errors(twice)]
    later = {**body, "activity": [{**body["activity"][-1], "year": 2026, "month": 11}]}
    assert errors(later)[0][0] == ("body", "activity", 0, "month")
    half = {**body, "cancellation_year": 2026, "cancellation_month": None}
    assert errors(half)[0][0] == ("body", "cancellation_month")
    cancelled = {**body, "cancellation_year": 2026, "cancellation_month": 9}
    assert errors(cancelled)[0][0] == ("body", "as_of")
    assert errors({**body, "extra_field": 1})[0][0] == ("body", "extra_field")
    status, answer, _ = client.request("POST", "/v1/score", b"{not json")
    assert status == 422 and "Traceback" not in json.dumps(answer)
    status, _, _ = client.request("POST", "/v1/score", b"{" + b" " * 30000 + b"}")
    assert status == 413


def test_model_endpoint_reports_the_compiled_model_check(home, server):
    _, champion, _ = home
    port, _ = server
    status, answer, _ = Client(port).get("/v1/model")
    assert status == 200
    churn = answer["champions"]["churn"]
    assert answer["champions"]["churn_model_version"] == champion
    inference = churn["inference"]
    assert inference["engine"] == "treelite", inference
    assert inference["rows_checked"] > 1000
    assert 0 <= inference["compiled_max_abs_difference"] <= inference["tolerance"] <= 1e-9
    assert churn["one_member_path"]["enabled"], churn["one_member_path"]
    assert "roc_auc" in churn["metrics"] and set(churn["tier_cutoffs"]) == {"Medium", "High", "Critical"}
    assert answer["champions"]["loaded_at"] and answer["scored_week"]["week"] == WEEK


def test_compiled_model_falls_back_to_scikit_learn_and_says_why(home):
    path, champion, _ = home
    bundle = registry.load_bundle(LocalStore(path / "lake"), "churn", champion)
    rows = _week(path).head(0)
    unchecked = compile_churn_model(bundle.model, bundle.feature_columns, rows)
    assert unchecked.engine == "scikit-learn" and "no rows" in unchecked.note
    X = np.random.default_rng(0).normal(size=(200, 3))
    linear = Pipeline([("scale", StandardScaler()), ("logistic", LogisticRegression())]).fit(X, X[:, 0] > 0)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    unsupported = compile_churn_model(linear, ["a", "b", "c"], frame)
    assert unsupported.engine == "scikit-learn" and "LogisticRegression" in unsupported.note
    assert np.array_equal(unsupported.probability(frame), linear.predict_proba(frame)[:, 1])


def _small_churn_frame(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Numeric columns with gaps and two categorical codes (card tier 0-2, promotion 0-1) with gaps."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "flights": rng.poisson(4.0, rows).astype(float),
            "distance": rng.exponential(2000.0, rows),
            "trend": rng.normal(size=rows),
            "tier": rng.integers(0, 3, rows).astype(float),
            "promotion": rng.integers(0, 2, rows).astype(float),
        }
    )
    frame.loc[rng.random(rows) < 0.1, "distance"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "tier"] = np.nan
    signal = -0.3 * frame["flights"] + (frame["tier"] == 2) + frame["promotion"] + rng.normal(size=rows)
    return frame, (signal > 0).to_numpy(dtype=int)


def _small_champions() -> dict[str, object]:
    """Gradient boosting with native categorical splits (plain and calibrated) and a forest after a
    ColumnTransformer (median imputer, one-hot encoder), fitted on 2,000 rows, calibrated on 500."""
    frame, labels = _small_churn_frame(2500, seed=5)
    fit, calibration = slice(0, 2000), slice(2000, 2500)
    categories = ["tier", "promotion"]
    boosting = Pipeline(
        [("model", HistGradientBoostingClassifier(max_iter=60, categorical_features=categories, random_state=0))]
    ).fit(frame[fit], labels[fit])
    prepare = ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median"), ["flights", "distance", "trend"]),
            ("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["tier", "promotion"]),
        ]
    )
    forest = Pipeline(
        [("prepare", prepare), ("model", RandomForestClassifier(n_estimators=40, min_samples_leaf=3, random_state=0))]
    ).fit(frame[fit], labels[fit])

    def calibrated(model):
        return CalibratedClassifierCV(FrozenEstimator(model), method="sigmoid").fit(
            frame[calibration], labels[calibration]
        )

    return {
        "boosting": boosting,
        "calibrated boosting": calibrated(boosting),
        "calibrated one-hot forest": calibrated(forest),
    }


@pytest.mark.parametrize("name", ["boosting", "calibrated boosting", "calibrated one-hot forest"])
def test_gradient_boosting_and_one_hot_forest_compile_and_match_scikit_learn(name):
    model = _small_champions()[name]
    columns = ["flights", "distance", "trend", "tier", "promotion"]
    check_rows, _ = _small_churn_frame(400, seed=6)
    compiled = compile_churn_model(model, columns, check_rows)
    assert compiled.engine == "treelite", compiled.note
    assert compiled.rows_checked == 400
    assert 0 <= compiled.max_abs_difference <= compiled.tolerance
    unseen, _ = _small_churn_frame(300, seed=7)
    unseen.loc[::7, "tier"] = 3.0  # a card tier no member had when the model was fitted
    expected = model.predict_proba(unseen)[:, 1]
    one_by_one = np.concatenate([compiled.matrix_probability(row[None, :]) for row in unseen.to_numpy()])
    assert np.max(np.abs(one_by_one - expected)) <= compiled.tolerance
    assert np.max(np.abs(compiled.probability(unseen) - expected)) <= compiled.tolerance


def test_a_passthrough_remainder_runs_as_numpy_not_through_scikit_learn():
    """scikit-learn >= 1.8 stores ``remainder="passthrough"`` as an identity ``FunctionTransformer``."""
    frame, _ = _small_churn_frame(50, seed=8)
    columns = list(frame.columns)
    drop_then_keep = ColumnTransformer([("unused", "drop", ["trend"])], remainder="passthrough").fit(frame)
    transform = _column_transformer(drop_then_keep, columns)
    matrix = frame.to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(transform(matrix), drop_then_keep.transform(frame))


def test_promotion_and_rollback_swap_the_served_model_without_a_failed_request(home, server):
    path, champion, challenger = home
    port, _ = server
    body = next(iter(_score_bodies(path).values()))
    served: list[str] = []
    failures: list[tuple] = []
    stop = threading.Event()

    def send_requests() -> None:
        client = Client(port)
        while not stop.is_set():
            status, answer, headers = client.post("/v1/score", body)
            if status != 200 or answer["churn_model_version"] != headers["x-churn-model-version"]:
                failures.append((status, answer))
            else:
                served.append(answer["churn_model_version"])

    def wait_for(version: str) -> None:
        deadline = time.monotonic() + 120
        while not (served and served[-1] == version):
            assert time.monotonic() < deadline, f"still serving {served[-1:]} instead of {version}"
            time.sleep(0.1)

    sender = threading.Thread(target=send_requests)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOYALTY_HOME", str(path))
        patch.delenv("DAGSTER_HOME", raising=False)
        sender.start()
        try:
            wait_for(champion)
            _promote(challenger)
            wait_for(challenger)
            _promote(champion)
            wait_for(champion)
        finally:
            stop.set()
            sender.join(timeout=60)
    assert failures == []
    switches = [version for previous, version in zip(served, served[1:]) if version != previous]
    assert switches == [challenger, champion]
    assert Client(port).get("/v1/model")[1]["champions"]["churn_model_version"] == champion


def test_each_worker_process_loads_and_reloads_the_champions_on_its_own(home):
    path, champion, challenger = home

    def versions_by_worker(expected: str) -> dict[int, str]:
        """Fresh connections (each may reach either worker) until both workers answer ``expected``."""
        seen: dict[int, str] = {}
        deadline = time.monotonic() + 180
        while sorted(seen.values()) != [expected, expected]:
            assert time.monotonic() < deadline, f"workers serve {seen}, expected {expected} in two"
            status, answer, headers = Client(port).get("/v1/model")
            assert status == 200
            seen[answer["process_id"]] = headers["x-churn-model-version"]
            time.sleep(0.05)
        return seen

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOYALTY_HOME", str(path))
        patch.delenv("DAGSTER_HOME", raising=False)
        with running_api(_server_environment(path), path / "serve-workers.log", workers=2) as port:
            before = versions_by_worker(champion)
            _promote(challenger)
            try:
                after = versions_by_worker(challenger)
            finally:
                _promote(champion)
    assert before.keys() == after.keys() and len(before) == 2


def test_champions_and_week_load_from_an_s3_lake(home, s3_bucket, aws_env):
    path, champion, _ = home
    local = LocalStore(path / "lake")
    lake = S3Store(boto3.client("s3", endpoint_url=aws_env), s3_bucket, "lake")
    for prefix in ("registry", "churn_predictions", "churn_training_set"):
        for key in local.list_keys(prefix):
            lake.put_bytes(key, local.get_bytes(key))
    state = ServingState(lake)
    state.refresh()
    assert state.last_error is None
    assert state.champions.churn_version == champion
    assert state.champions.compiled.engine == "treelite"
    assert state.week.week == WEEK and state.week.row(int(_week(path)["loyalty_number"].iloc[0])) is not None


def test_one_member_path_and_batch_code_give_the_same_rows(home):
    path, champion, _ = home
    state = ServingState(LocalStore(path / "lake"))
    state.refresh()
    champions = state.champions
    assert champions.member_scorer is not None, champions.member_scorer_note
    batch_code = dataclasses.replace(champions, member_scorer=None)
    week = _week(path)
    bodies = _score_bodies(path)
    # Every tier, so rows with and without reasons are compared.
    members = week.groupby("risk_tier", observed=True)["loyalty_number"].head(5).tolist()
    for member in members:
        request = ScoreRequest.model_validate(bodies[member])
        fast, slow = score_request(champions, request), score_request(batch_code, request)
        expected = {key: _plain(value) for key, value in slow.items() if key != "snapshot_month"}
        assert {key: fast[key] for key in expected} == expected
        assert fast["snapshot_month"] == pd.Timestamp(slow["snapshot_month"]).date()
    assert any(score_request(champions, ScoreRequest.model_validate(bodies[m]))["top_reasons"] for m in members)
    scorer, note = _member_scorer(
        champions.scorer, {"model": champions.segmentation}, "v", champions.compiled, load_action_table(), None
    )
    assert scorer is None and "no validation rows" in note


def test_serve_refuses_to_start_without_api_keys(monkeypatch, capsys):
    monkeypatch.setenv("LOYALTY_API_KEYS", " , ")
    assert cli.main(["serve", "--port", str(free_port())]) == 2
    assert "LOYALTY_API_KEYS is not set" in capsys.readouterr().err
