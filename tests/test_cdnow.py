"""The raw CDNOW file loads with the documented config; each quirk is handled as documented."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import ROOT, check_reasons
from winback.config import load_config
from winback.features import build_features
from winback.labels import build_labels
from winback.orders import load_orders


@pytest.fixture(scope="module")
def cdnow(cdnow_dir):
    cfg = load_config(ROOT / "configs" / "cdnow.yaml")
    return load_orders(cdnow_dir / "CDNOW_master.txt", cfg.orders)


def test_cdnow_counts(cdnow):
    assert cdnow.report.rows_read == 69_659
    assert cdnow.report.n_orders == 69_659
    assert cdnow.report.n_customers == 23_570
    assert cdnow.report.n_returns == 0
    assert f"{cdnow.first_ts:%Y-%m-%d}" == "1997-01-01"
    assert f"{cdnow.last_ts:%Y-%m-%d}" == "1998-06-30"


def test_cdnow_zero_amount_orders_are_reported_and_kept(cdnow):
    zero = [p for p in cdnow.report.problems if p.check == "zero_amount"]
    assert len(zero) == 1 and zero[0].count == 80 and zero[0].policy == "keep"
    assert (cdnow.to_pandas()["amount"] == 0).sum() == 80
    # nothing else is wrong with the file but its 255 exact duplicate lines, kept as orders
    assert [p.check for p in cdnow.report.problems] == ["duplicate_line", "zero_amount"]
    dup = cdnow.report.problems[0]
    assert (dup.count, dup.policy) == (255, "keep")


def test_cdnow_duplicate_and_same_day_lines_stay_separate_orders(cdnow):
    df = cdnow.to_pandas()
    assert df["order_id"].is_unique
    same_day = df.groupby(["customer_id", "order_ts"]).size()
    assert int((same_day - 1).sum()) == 2_068  # lines beyond the first on a customer's day
    exact = df.groupby(["customer_id", "order_ts", "amount"]).size()
    assert int((exact - 1).sum()) >= 255  # the 255 exact duplicate lines are all still there
    assert df.loc[df["customer_id"] == "00002", "order_id"].tolist() == [
        "00002-19970112-1",
        "00002-19970112-2",
    ]


def test_cdnow_raw_file_equals_the_contract_parquet(cdnow, cdnow_dir):
    pq = load_orders(cdnow_dir / "orders.parquet", load_config(None).orders)
    assert pq.report.n_orders == cdnow.report.n_orders
    cuts = ["1997-12-31", "1998-03-31"]
    pd.testing.assert_frame_equal(build_features(cdnow, cuts), build_features(pq, cuts))


def test_cdnow_reference_settings(cdnow):
    l91 = build_labels(cdnow, ["1998-03-31"], horizon_days=91, lookback_days=365)
    assert len(l91) == 9_526
    assert l91["churned"].mean() == pytest.approx(0.700, abs=0.0005)
    l181 = build_labels(cdnow, ["1997-12-31"], horizon_days=181, lookback_days=365)
    assert len(l181) == 23_570
    assert l181["churned"].mean() == pytest.approx(0.772, abs=0.0005)


def test_cdnow_sample_file_without_header_loads(cdnow_dir):
    cfg = load_config(
        None,
        [
            "orders.csv.delimiter=whitespace",
            "orders.csv.header=false",
            "orders.columns.customer_id=column0",
            "orders.columns.order_ts=column2",
            "orders.columns.amount=column4",
            "orders.columns.order_id=null",
            "orders.date_format=%Y%m%d",
            "orders.policies.duplicate_line=keep",  # as in configs/cdnow.yaml
        ],
    )
    o = load_orders(cdnow_dir / "CDNOW_sample.txt", cfg.orders)
    assert o.report.n_orders == 6_919
    # by default its 21 exact duplicate lines would be dropped as copies
    assert [p.count for p in o.report.problems if p.check == "duplicate_line"] == [21]
    assert o.report.n_customers == 2_357


def test_the_first_nightly_run_after_train_is_not_called_drift(cdnow):
    # one acquisition cohort that ages: tenure and totals grow by construction, which is no
    # reason to refuse to publish; a real shift in how recently customers buy still is
    from datetime import datetime

    from winback.cutoffs import training_cutoffs
    from winback.model import ChurnModel
    from winback.snapshots import build_snapshots

    t, h = datetime(1998, 6, 30), 91
    cuts = training_cutoffs(t, h, 14, 24, cdnow.first_ts)
    train = build_snapshots(cdnow, cuts, h, observed_until=t)
    model = ChurnModel(horizon_days=h, random_state=1).fit(train, train["churned"])
    tonight = build_snapshots(cdnow, [t], h, labels=False)
    drift = model.drift(tonight, model.predict_proba(tonight)[:, 1])
    assert max(drift.values()) < 0.25, drift  # drift.fail_psi
    stale = tonight.assign(recency_days=tonight["recency_days"] + 150)
    assert model.drift(stale, model.predict_proba(tonight)[:, 1])["recency_days"] > 0.25

    # that night's lists: every reason of every listed customer is true of them and of the
    # scored population they are compared with
    from winback.config import CampaignsConfig
    from winback.scoring import add_reasons, build_lists, score_customers

    scored = score_customers(cdnow, model, t, CampaignsConfig())
    lists = add_reasons(scored, model, build_lists(scored.scores, CampaignsConfig()))
    assert check_reasons(lists, scored.features) >= sum(len(f) for f in lists.values()) > 1000
