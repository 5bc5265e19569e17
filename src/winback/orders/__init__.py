"""Read an order history, map its columns, validate it, and hold it as the orders contract.

The orders contract is one row per order::

    customer_id  VARCHAR        who bought
    order_id     VARCHAR        unique per order (if absent: made of customer, day and a counter)
    order_ts     TIMESTAMP      when, in UTC (stored without a zone; always UTC inside winback)
    amount       DECIMAL(18,4)  net order value; returns and cancellations are negative
    is_return    BOOLEAN        a return or cancellation: never a purchase, but seen by features
    category     VARCHAR        optional
    channel      VARCHAR        optional

Everything runs inside the engine (DuckDB, or Spark), so a large CSV or Parquet file is never
loaded whole into pandas. Amounts are stored as exact decimals, so sums do not depend on the
order of the input rows.

The package, from the source to the table:

- :mod:`~winback.orders.csvfiles`, :mod:`~winback.orders.database` and
  :mod:`~winback.orders.sources`: one reader per kind of source (CSV, Parquet, DuckDB file,
  database URL) for both engines, each leaving the raw rows as the view ``_raw``;
- :mod:`~winback.orders.shape`: SQL that turns raw columns into the contract's types;
- :mod:`~winback.orders.checks`: the table of row checks and their examples;
- :mod:`~winback.orders.load`: :func:`load_orders`, a short sequence of named stages;
- :mod:`~winback.orders.table`: :class:`Orders` and its :class:`ValidationReport`.
"""

from winback.orders.load import load_orders, orders_from_frame
from winback.orders.table import Orders, Problem, ValidationReport

__all__ = ["Orders", "Problem", "ValidationReport", "load_orders", "orders_from_frame"]
