"""Seeded shares of customers, chosen by a hash of the id: the same customers on every run and
on every engine, whatever order the rows come in."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["customer_share"]


def customer_share(customer_id: pd.Series, share: float, seed: int) -> np.ndarray:
    """A row mask of the customers that fall in a ``share`` (0 to 1) of all ids, by a hash of the
    id keyed with ``seed``: every row of a customer is in or out together."""
    h = pd.util.hash_pandas_object(customer_id.astype(str), index=False, hash_key=f"{seed:016d}")
    return ((h.to_numpy() % 10_000) < int(round(share * 10_000))).astype(bool)
