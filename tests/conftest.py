"""Shared fixtures: small hand-made order logs, the CDNOW files, a synthetic history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from math import floor
from pathlib import Path

import pandas as pd
import pytest

from winback.config import OrdersConfig
from winback.orders import Orders, load_orders
from winback.synth import SynthParams, generate_orders

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CDNOW_DIR = SHARED / "datasets" / "cdnow"


@pytest.fixture(autouse=True)
def _no_tracking_store_left_by_earlier_tests():
    """Each test starts and ends, as a user's shell does, without MLFLOW_TRACKING_URI: MLflow
    writes the store it was last pointed at into this process's environment, which would
    otherwise reach the CLI runs of later tests (tests that want a store pass it themselves)."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python -m winback ARGS`` as a real subprocess, as a user runs it (``env`` is added to
    this process's environment)."""
    return subprocess.run(
        [sys.executable, "-m", "winback", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def frame(rows: list[tuple], columns=("customer_id", "order_ts", "amount")) -> pd.DataFrame:
    """A frame of orders from tuples; timestamps given as strings are read as UTC."""
    df = pd.DataFrame(rows, columns=list(columns))
    df["order_ts"] = pd.to_datetime(df["order_ts"], utc=True, format="ISO8601")
    return df


def record_order_splits(monkeypatch, module) -> list[tuple[int, str | None, list[str]]]:
    """Record, for each call of ``orders_by_partition`` made from ``module``, its partitions,
    the table it gave (None: the orders were left whole) and that table's columns."""
    import contextlib

    import winback.features as features

    made: list[tuple[int, str | None, list[str]]] = []
    split = features.orders_by_partition

    @contextlib.contextmanager
    def recording(engine, orders, k, spec):
        with split(engine, orders, k, spec) as table:
            made.append((k, table, list(engine.columns(table)) if table else []))
            yield table

    monkeypatch.setattr(module, "orders_by_partition", recording)
    return made


def orders_of(df: pd.DataFrame, **columns) -> Orders:
    """Validate a frame with the contract's column names (plus any mapping given)."""
    mapping = {"order_id": "order_id" if "order_id" in df.columns else None, **columns}
    cfg = OrdersConfig.model_validate({"columns": mapping})
    return load_orders(df, cfg, as_of=pd.Timestamp("2100-01-01", tz="UTC").to_pydatetime())


@pytest.fixture(scope="session")
def cdnow_dir() -> Path:
    if not CDNOW_DIR.is_dir():
        pytest.fail(f"the shared data sets are expected at {CDNOW_DIR} (../shared beside the repo)")
    return CDNOW_DIR


@pytest.fixture(scope="session")
def synth_frame() -> pd.DataFrame:
    return generate_orders(SynthParams(n_customers=1500, start="2022-01-01", end="2023-12-31"))


def check_reasons(lists: dict[str, pd.DataFrame], features: pd.DataFrame) -> int:
    """Check every reason of every listed customer against that customer's features (their own
    order history at the as-of) and the medians of the scored population; return how many
    sentences were checked. A sentence no rule recognises fails too."""
    import re

    pop = features[["n_orders", "monetary_total", "gap_mean_days", "tenure_days"]].median()
    f = features.set_index("customer_id")

    def days(n: str) -> float:
        return float(n.replace(",", ""))

    def true(sentence: str, x: pd.Series) -> bool:
        rec, gap = x["recency_days"], x.get("gap_mean_days")
        rules = [
            (r"bought once, (\d+) days? ago", lambda m: x["n_order_days"] == 1
             and floor(rec) == days(m[1])),
            (r"no order for (\d+) days?, ([\d.]+)x their usual gap", lambda m: rec >= gap
             and floor(rec) == days(m[1]) and f"{rec / gap:.1f}" == m[2]),
            (r"bought twice, (\d+) days? apart", lambda m: x["n_order_days"] == 2
             and round(gap) == days(m[1])),
            (r"buys less often than most customers: about every (\d+) days? "
             r"\(typical: (\d+) days?\)", lambda m: gap > pop["gap_mean_days"]
             and round(gap) == days(m[1]) and round(pop["gap_mean_days"]) == days(m[2])),
            (r"(\d+) orders? so far, fewer than most customers \(typical: ([\d.]+)\)",
             lambda m: x["n_orders"] == int(m[1]) < pop["n_orders"] == float(m[2])),
            (r"spent ([\d,]+) so far, less than most customers \(typical: ([\d,]+)\)",
             lambda m: x["monetary_total"] < pop["monetary_total"]
             and round(x["monetary_total"]) == days(m[1])),
            (r"a newer customer: first order (\d+) days? ago \(typical: (\d+) days?\)",
             lambda m: x["tenure_days"] < pop["tenure_days"] and floor(x["tenure_days"])
             == days(m[1])),
            (r"spend down (\d+)% vs the previous 90 days",
             lambda m: round(-100 * x["spend_change_90d"]) == int(m[1])),
            (r"ordering less often than before",
             lambda m: x["orders_trend_90d"] < 0 or x["orders_trend_180d"] < 0),
            (r"returned (\d+) order\(s\)", lambda m: x["n_returns"] == int(m[1]) > 0),
            (r"no order in the last (\d+) days", lambda m: x[f"orders_{m[1]}d"] == 0),
            (r"no order for (\d+) days?", lambda m: floor(rec) == days(m[1])),
            (r"last order (\d+) days? ago", lambda m: floor(rec) == days(m[1])),
        ]  # fmt: skip
        for pattern, holds in rules:
            m = re.fullmatch(pattern, sentence)
            if m:
                return bool(holds(m))
        return False

    checked = 0
    for frame in lists.values():
        for cid, text in zip(frame["customer_id"], frame["reasons"], strict=True):
            assert isinstance(text, str) and text, f"customer {cid} has no reason"
            for sentence in text.split("; "):
                assert true(sentence, f.loc[cid]), f"untrue for {cid}: {sentence!r}"
                checked += 1
    return checked


#: Flags of a headless Chromium on a machine without a network or a screen.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]  # fmt: skip


def hidden_in_browser(page: Path, width: int = 1280) -> list[str]:
    """What of an HTML page a reader cannot see in a real browser window ``width`` pixels wide:
    each table or image that reaches past the window's right edge (cut off, or behind a
    scrollbar), as ``section:tag:right edge``. The page is laid out by headless Chromium
    (Debian's ``chromium``; ``.ci/run`` installs it), which runs a probe added to a copy."""
    import shutil
    import tempfile

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "headless Chromium is needed: apt-get install chromium (.ci/run does)"
    probe = """<script>
    const W = document.documentElement.clientWidth, cut = [];
    document.querySelectorAll('table, img').forEach(el => {
      const r = el.getBoundingClientRect();
      if (r.right > W + 0.5) {
        const s = el.closest('section');
        cut.push((s ? s.id : 'page') + ':' + el.tagName.toLowerCase() + ':' + Math.round(r.right));
      }
    });
    document.body.setAttribute('data-window', W);
    document.body.setAttribute('data-cut', cut.join(' '));
    </script>"""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(page.read_text(encoding="utf-8").replace("</body>", probe + "</body>"))
        res = subprocess.run(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile",
             f"--window-size={width},900", "--dump-dom", copy.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    import re

    body = re.search(r'<body data-window="(\d+)" data-cut="([^"]*)"', res.stdout)
    assert body, f"the browser laid nothing out: {res.stderr[-500:]}"
    assert int(body[1]) > width * 0.9  # the window really was that wide
    return body[2].split()


def learned_uplift(orders_file: Path, folder: Path, beats: bool):
    """A learned.json in ``folder`` whose uplift model (a real X-learner, fitted on a made-up
    campaign of the shop in ``orders_file`` at 2023-09-30) was judged better than p_churn or
    not; and the model."""
    import joblib
    import numpy as np

    from winback.atomic import sha256_file
    from winback.snapshots import build_snapshots
    from winback.uplift import UpliftModel

    frame = pd.read_parquet(orders_file)
    o = orders_of(frame, category="category", channel="channel")
    snap = build_snapshots(o, [datetime(2023, 9, 30)], 60, 730, labels=False)
    rng = np.random.default_rng(3)
    treated = rng.random(len(snap)) < 0.5
    # a contact moves the customers who bought 60-180 days ago, no one else
    lapsing = snap["recency_days"].between(60, 180).to_numpy()
    bought = (rng.random(len(snap)) < 0.2) | (treated & lapsing & (rng.random(len(snap)) < 0.4))
    model = UpliftModel(n_estimators=50).fit(snap, treated, bought)
    folder.mkdir()
    joblib.dump(model, folder / "learned.uplift.joblib")
    judged = {"qini": 0.02, "qini_lo": 0.012, "qini_hi": 0.028}
    doc = {
        "learned_at": "2024-01-05T00:00:00+00:00",
        "groups": {},
        "uplift": {
            "evaluated": True,
            "beats_p_churn": beats,
            "why": "the model's Qini interval lies above p_churn's Qini"
            if beats
            else "the model's Qini interval does not lie above p_churn's Qini: keep p_churn",
            "trained_on": ["2023-06-30"],
            "evaluated_on": "2023-09-30",
            "fitted_on": ["2023-06-30", "2023-09-30"],
            "rankings": {"model": judged, "p_churn": {"qini": 0.004 if beats else 0.03}},
            "model_file": "learned.uplift.joblib",
            "model_sha256": sha256_file(folder / "learned.uplift.joblib"),
        },
    }
    (folder / "learned.json").write_text(json.dumps(doc))
    return folder / "learned.json", model
