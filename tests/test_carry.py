"""Features carried from night to night: the same as computing every customer's, whatever the
orders did in between (new, late, corrected, deleted orders, window edges, skipped nights)."""

from __future__ import annotations

import gc
import json
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from tests.conftest import orders_of
from winback.carry import KEPT_DIR
from winback.config import CampaignsConfig
from winback.cutoffs import training_cutoffs
from winback.model import ChurnModel, save_model
from winback.scoring import keep_features, score_customers
from winback.snapshots import build_snapshots

UTC = "UTC"
MAP = ["orders.columns.category=category", "orders.columns.channel=channel"]


@pytest.fixture(scope="module")
def model(synth_frame, tmp_path_factory):
    o = orders_of(synth_frame, category="category", channel="channel")
    cuts = training_cutoffs(datetime(2023, 11, 1), 60, 30, 4, o.first_ts)
    snaps = build_snapshots(o, cuts, 60)
    m = ChurnModel(horizon_days=60, n_estimators=60).fit(snaps, snaps["churned"])
    path = tmp_path_factory.mktemp("carry") / "model.joblib"
    save_model(m, path)
    return m, path


@pytest.fixture
def out_of_core(monkeypatch):
    """Score 1,500 customers out of core, in 5 partitions; BG/NBD on a seeded sample."""
    import winback.scoring as scoring
    import winback.snapshots as snapshots

    monkeypatch.setattr(scoring, "SCORE_PARTITION_CUSTOMERS", 100)
    monkeypatch.setattr(scoring, "SCORE_PARTITION_ROWS", 300)
    monkeypatch.setattr(snapshots, "BGNBD_FIT_MAX_CUSTOMERS", 500)
    return monkeypatch


def _ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz=UTC)


def _by_hand(frame: pd.DataFrame) -> pd.DataFrame:
    """Two customers whose features are worked out by hand below."""
    rows = [
        # edge: bought 29.25 days before 2023-11-30; 30.25 days before 2023-12-01, so the
        # order leaves the 30-day window overnight
        ("900001", _ts("2023-10-31 18:00"), 50.0),
        ("900001", _ts("2023-06-01 00:00"), 20.0),
        # steady: no window edge crossed between the two nights
        ("900002", _ts("2023-11-20 06:00"), 40.0),
        ("900002", _ts("2023-05-10 00:00"), 10.0),
    ]
    extra = pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "order_id": np.arange(9_000_001, 9_000_001 + len(rows)),
            "order_ts": pd.to_datetime([r[1] for r in rows]).astype(frame["order_ts"].dtype),
            "amount": [r[2] for r in rows],
            "quantity": 1,
            "category": "books",
            "channel": "web",
        }
    )
    base = frame.assign(customer_id=frame["customer_id"].astype(str))
    return pd.concat([base, extra.astype(base.dtypes.to_dict())], ignore_index=True)


def _features(scored) -> pd.DataFrame:
    files = sorted(str(p) for p in scored.features_path.glob("*.arrow"))
    t = ds.dataset(files, format="ipc").to_table().to_pandas()
    return t.sort_values("customer_id").reset_index(drop=True)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal: texts and counts exactly, amounts and days to 1e-12 (DuckDB's parallel sums and
    standard deviations may differ in the last bit from one run of the same query to the
    next)."""
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12, atol=0)


def test_carried_features_equal_features_from_every_order_night_after_night(
    synth_frame, model, out_of_core, tmp_path
):
    m, _ = model
    cfg = CampaignsConfig()
    full = _by_hand(synth_frame)
    keep = tmp_path / KEPT_DIR
    first_id = full["customer_id"].iloc[0]
    late = (
        full[full["customer_id"] == first_id]
        .iloc[[0]]
        .assign(order_id=9_100_000, order_ts=_ts("2023-11-15 10:00"), amount=33.0)
    )
    corrected_id = full["customer_id"].iloc[10]
    deleted = full.index[(full["customer_id"] == full["customer_id"].iloc[20])][:1]

    def night(as_of: str, orders: pd.DataFrame, rows_per_part: int = 300):
        out_of_core.setattr("winback.scoring.SCORE_PARTITION_ROWS", rows_per_part)
        t = datetime.fromisoformat(as_of)
        o = orders_of(
            orders[orders["order_ts"] <= _ts(as_of)], category="category", channel="channel"
        )
        carried = score_customers(o, m, t, cfg, keep_in=keep)
        fresh = score_customers(o, m, t, cfg)
        _same(carried.scores, fresh.scores)
        assert carried.drift == pytest.approx(fresh.drift, rel=1e-12)
        a, b = _features(carried), _features(fresh)
        _same(a, b)
        keep_features(carried, tmp_path)
        record = carried.carry.record()
        del carried, fresh
        gc.collect()
        return a.set_index("customer_id"), record

    # the first night has nothing kept: every customer is computed
    f1, r1 = night("2023-11-30", full)
    assert r1["carried_from"] is None and r1["customers_carried"] == 0
    assert f1.loc["900001", "orders_30d"] == 1 and f1.loc["900002", "recency_days"] == 9.75

    # the next night: new orders and window edges move their customers; the rest carry
    f2, r2 = night("2023-12-01", full)
    assert r2["carried_from"] == "2023-11-30T00:00:00"
    assert 0 < r2["customers_computed"] < r2["customers_carried"]
    assert f2.loc["900001", "orders_30d"] == 0 and f2.loc["900001", "spend_30d"] == 0.0
    assert f2.loc["900001", "recency_days"] == 30.25
    assert f2.loc["900002", "recency_days"] == 10.75  # 9.75 days and one more
    assert f2.loc["900002", "tenure_days"] == 205.0  # 2023-05-10 to 2023-12-01

    # three nights skipped, a late order, a corrected amount and a deleted order
    changed = pd.concat([full, late], ignore_index=True)
    changed.loc[changed["customer_id"] == corrected_id, "amount"] *= 1.5
    changed = changed.drop(index=deleted)
    f3, r3 = night("2023-12-04", changed)
    assert (
        f3.loc[first_id, "n_orders"]
        == f2.loc[first_id, "n_orders"]
        + 1
        + (
            (full["customer_id"] == first_id)
            & (full["order_ts"] > _ts("2023-12-01"))
            & (full["order_ts"] <= _ts("2023-12-04"))
            & (full["amount"] > 0)
        ).sum()
    )

    # the same night again, the same orders: nothing to compute
    _, r4 = night("2023-12-04", changed)
    assert r4["customers_computed"] == 0 and r4["carried_from"] == "2023-12-04T00:00:00"

    # tonight in 4 partitions where the kept features were in 5
    _, r5 = night("2023-12-05", changed, rows_per_part=400)
    assert r5["customers_carried"] > 0


def test_kept_features_of_other_settings_are_not_carried(synth_frame, model, out_of_core, tmp_path):
    m, _ = model
    cfg = CampaignsConfig()
    o = orders_of(synth_frame, category="category", channel="channel")
    keep = tmp_path / KEPT_DIR
    first = score_customers(o, m, datetime(2023, 12, 1), cfg, keep_in=keep)
    keep_features(first, tmp_path)
    other_windows = score_customers(
        o, m, datetime(2023, 12, 2), cfg, (30, 60, 90, 180, 365), keep_in=keep
    )
    assert other_windows.carry.record()["carried_from"] is None
    same = score_customers(o, m, datetime(2023, 12, 2), cfg, keep_in=keep)
    assert same.carry.record()["carried_from"] == "2023-12-01T00:00:00"
    # an earlier night does not use (or replace) features kept at a later one
    earlier = score_customers(o, m, datetime(2023, 11, 30), cfg, keep_in=keep)
    assert earlier.carry.record()["carried_from"] is None
    kept = (keep / "current").resolve()
    keep_features(earlier, tmp_path)
    assert (keep / "current").resolve() == kept
    assert json.loads((kept / "meta.json").read_text())["cutoff"] == "2023-12-01T00:00:00"


def test_the_score_job_keeps_features_only_once_its_export_is_published(
    synth_frame, model, out_of_core, tmp_path
):
    import winback.jobs as jobs
    from winback.config import load_config

    _, path = model
    cfg = load_config(None, MAP)
    o = orders_of(synth_frame, category="category", channel="channel")
    out = tmp_path / "exports"
    jobs.score_job(o, cfg, out, as_of=datetime(2023, 12, 1), model=str(path))
    first = (out / KEPT_DIR / "current").resolve()
    assert (first / "checks.parquet").is_file() and len(list((first / "features").iterdir())) == 5
    # the folder a killed run left behind (its process is gone) goes with the next keep
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    crashed = out / KEPT_DIR / f"work-{gone.pid}-1"
    (crashed / "features").mkdir(parents=True)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jobs, "export_lists", fail)
        with pytest.raises(OSError, match="No space left"):
            jobs.score_job(o, cfg, out, as_of=datetime(2023, 12, 2), model=str(path))
    assert (out / KEPT_DIR / "current").resolve() == first  # the failed night kept nothing
    done = jobs.score_job(o, cfg, out, as_of=datetime(2023, 12, 2), model=str(path))
    manifest = json.loads((done.folder / "manifest.json").read_text())
    assert manifest["features"]["carried_from"] == "2023-12-01T00:00:00"
    assert manifest["features"]["customers_carried"] > 0
    now = (out / KEPT_DIR / "current").resolve()
    assert now != first and not first.exists()  # the older kept features are gone
    gc.collect()  # the failed night's scores, and with them its work folder
    assert not crashed.exists()
    assert [p.name for p in (out / KEPT_DIR).iterdir() if p.name.startswith("work-")] == []

    off = load_config(None, [*MAP, "engine.carry_features=false"])
    plain = jobs.score_job(o, off, tmp_path / "plain", as_of=datetime(2023, 12, 2), model=str(path))
    assert json.loads((plain.folder / "manifest.json").read_text())["features"] is None
    assert not (tmp_path / "plain" / KEPT_DIR).exists()
    for name in ("at_risk", "lapsed"):
        a = pd.read_parquet(done.folder / f"{name}.parquet")
        b = pd.read_parquet(plain.folder / f"{name}.parquet")
        _same(a, b)


def test_a_night_reads_its_own_links_to_the_kept_features(
    synth_frame, model, out_of_core, tmp_path
):
    # another run may replace (and remove) the kept folder while tonight still reads it
    import shutil

    import winback.carry as carry

    m, _ = model
    cfg = CampaignsConfig()
    o = orders_of(synth_frame, category="category", channel="channel")
    keep = tmp_path / KEPT_DIR
    keep_features(score_customers(o, m, datetime(2023, 12, 1), cfg, keep_in=keep), tmp_path)
    link = carry._linked

    def linked_then_removed(kept, to):
        mine = link(kept, to)
        shutil.rmtree(kept.folder)  # what the other run's clean-up does
        return mine

    out_of_core.setattr(carry, "_linked", linked_then_removed)
    tonight = score_customers(o, m, datetime(2023, 12, 2), cfg, keep_in=keep)
    assert tonight.carry.record()["customers_carried"] > 0
    fresh = score_customers(o, m, datetime(2023, 12, 2), cfg)
    _same(tonight.scores, fresh.scores)
    _same(_features(tonight), _features(fresh))
