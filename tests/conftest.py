"""Shared fixtures: small hand-made order logs, the CDNOW files, a synthetic history."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from winback.config import OrdersConfig
from winback.orders import Orders, load_orders
from winback.synth import SynthParams, generate_orders

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CDNOW_DIR = SHARED / "datasets" / "cdnow"


def frame(rows: list[tuple], columns=("customer_id", "order_ts", "amount")) -> pd.DataFrame:
    """A frame of orders from tuples; timestamps given as strings are read as UTC."""
    df = pd.DataFrame(rows, columns=list(columns))
    df["order_ts"] = pd.to_datetime(df["order_ts"], utc=True, format="ISO8601")
    return df


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
