"""Feature benchmark: DuckDB path vs the plain-pandas reference vs the bare DuckDB floor.

For each size (default 1M and 10M synthetic orders) and each case, run a fresh subprocess (so
peak RSS is the case's own), interleaving the cases round by round so that noise on this shared
machine hits all of them alike; report medians of the rounds.

Cases
-----
a  DuckDB path, one cutoff: load + validate the Parquet file, every feature, write Parquet
   (what `winback features` does)
b  the same features from the plain-pandas reference (read Parquet, compute, write Parquet)
c  floor: DuckDB reads the needed columns and counts orders per customer
d  DuckDB path, 6 monthly cutoffs in one pass
e  least work: what any way of computing (a) must do at the least, as bare DuckDB SQL on the
   file, timed piece by piece: the typed orders table (ids as text), a count of distinct order
   ids (the duplicate check), 21 per-customer aggregates at the cutoff, each customer's top
   category, and the rows written to Parquet with as many columns as (a) writes, uncompressed
   (the fastest way; (a) writes them with zstd). It leaves out the gaps between purchase days,
   the channels and every row check, so (e) / (c) is a bound that (a) / (c) cannot go below on
   this machine.

Usage: python benchmarks/bench_features.py [--sizes 1000000,10000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"
CUTOFF = datetime(2024, 9, 30)
CASES = ("a", "b", "c", "d", "e")


def _data_file(n_orders: int) -> Path:
    from winback.synth import SynthParams, customers_for_orders, generate_orders

    path = DATA / f"synth_{n_orders}.parquet"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        n = customers_for_orders(n_orders)
        df = generate_orders(SynthParams(n_customers=n, start="2022-01-01", end="2024-12-31"))
        tmp = path.with_suffix(".tmp")
        df.to_parquet(tmp, index=False)
        tmp.rename(path)
    return path


def _run_case(case: str, path: str) -> dict:
    """Run one case in this process; return wall seconds, rows and peak RSS."""
    import tempfile

    scratch = tempfile.TemporaryDirectory()  # removed when the case returns
    out = Path(scratch.name) / "features.parquet"
    if case == "e":  # the columns case a writes, counted before the clock starts
        from winback.features import FeatureSpec, feature_names

        n_cols = 2 + len(feature_names(FeatureSpec(has_category=True, has_channel=True)))
    t0 = time.perf_counter()
    extra: dict = {}
    if case in ("a", "d"):
        from winback.config import load_config
        from winback.engines.duckdb import connect
        from winback.features import write_features
        from winback.orders import load_orders

        cfg = load_config(
            None, ["orders.columns.category=category", "orders.columns.channel=channel"]
        )
        con = connect(cfg.engine.memory_limit)
        orders = load_orders(path, cfg.orders, as_of=datetime(2025, 1, 1), con=con)
        extra["load_s"] = time.perf_counter() - t0
        cuts = [CUTOFF] if case == "a" else [CUTOFF - timedelta(days=30 * k) for k in range(6)]
        rows = write_features(orders, cuts, out)
    elif case == "b":
        import pandas as pd

        from winback.features import FeatureSpec
        from winback.reference import reference_features

        df = pd.read_parquet(
            path,
            columns=["customer_id", "order_ts", "amount", "category", "channel"],
        )
        df["customer_id"] = df["customer_id"].astype(str)
        df["is_return"] = df["amount"] < 0
        df["category"] = df["category"].astype(object)
        df["channel"] = df["channel"].astype(object)
        extra["load_s"] = time.perf_counter() - t0
        spec = FeatureSpec(has_category=True, has_channel=True)
        feats = reference_features(df, [CUTOFF], spec)
        feats.to_parquet(out, index=False)
        rows = len(feats)
    elif case == "e":
        rows, extra["pieces_s"] = _least_work(path, n_cols, Path(scratch.name) / "least.parquet")
    else:
        import duckdb

        con = duckdb.connect()
        rows = con.execute(
            f"SELECT count(*) FROM (SELECT customer_id, count(*) FROM read_parquet('{path}') "
            f"WHERE order_ts <= TIMESTAMP '{CUTOFF:%Y-%m-%d}' GROUP BY customer_id)"
        ).fetchall()[0][0]
    wall = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"wall_s": wall, "rows": int(rows), "peak_rss_mb": rss_mb, **extra}


def _least_work(path: str, n_cols: int, out: Path) -> tuple[int, dict[str, float]]:
    """Case e: the pieces of the least work for case a, each timed, writing ``n_cols``
    columns; the customers written."""
    import duckdb

    cut = f"TIMESTAMP '{CUTOFF:%Y-%m-%d}'"
    age = f"(epoch_ms({cut}) - epoch_ms(order_ts)) / 86400000.0"
    buy = "NOT is_return"
    aggs = [f"min(age) FILTER (WHERE {buy})", f"max(age) FILTER (WHERE {buy})"]
    for cond in (
        [buy]
        + [f"{buy} AND age < {w}" for w in (30, 90, 180, 365)]
        + [
            f"{buy} AND age >= 90 AND age < 180",
            "is_return",
        ]
    ):
        aggs += [f"count(*) FILTER (WHERE {cond})", f"sum(amount) FILTER (WHERE {cond})"]
    aggs += [
        f"max(amount) FILTER (WHERE {buy})",
        f"count(*) FILTER (WHERE {buy} AND age >= 180 AND age < 360)",
        f"count(*) FILTER (WHERE {buy} AND age >= 275 AND age < 365)",
        "count(*) FILTER (WHERE is_return AND age < 90)",
        "min(age) FILTER (WHERE is_return)",
    ]
    named = ", ".join(f"{a} AS a{i}" for i, a in enumerate(aggs))
    # as many columns as case a writes: the keys, the aggregates, the category's two, and
    # ratios of the aggregates for the rest
    n_ratios = n_cols - (2 + len(aggs) + 2)
    ratios = ", ".join(f"a{i % len(aggs)} / 2.0 AS r{i}" for i in range(n_ratios))
    pieces = {
        "typed orders": f"""CREATE TABLE o AS SELECT CAST(customer_id AS VARCHAR) AS customer_id,
                CAST(order_id AS VARCHAR) AS order_id, CAST(order_ts AS TIMESTAMP) AS order_ts,
                CAST(round(amount, 4) AS DECIMAL(18,4)) AS amount, amount < 0 AS is_return,
                category, channel FROM read_parquet('{path}')""",
        "distinct order ids": "SELECT count(*) - count(DISTINCT order_id) FROM o",
        "per-customer aggregates": f"""CREATE TABLE b AS SELECT customer_id, {named}
                FROM (SELECT *, {age} AS age FROM o WHERE order_ts <= {cut})
                GROUP BY customer_id HAVING min(age) FILTER (WHERE {buy}) < 365""",
        "top category": f"""CREATE TABLE c AS SELECT customer_id, count(*) AS n_categories,
                max(n) AS top_n FROM (SELECT customer_id, category, count(*) AS n FROM o
                    WHERE order_ts <= {cut} AND {buy} AND category IS NOT NULL
                    GROUP BY customer_id, category) AS t GROUP BY customer_id""",
        f"write Parquet ({n_cols} columns)": f"""COPY (SELECT b.*, {cut} AS cutoff_ts, {ratios},
                c.n_categories, c.top_n / b.a2 AS top_category_share
                FROM b JOIN c USING (customer_id) ORDER BY customer_id) TO '{out}'
                (FORMAT parquet, COMPRESSION uncompressed)""",
    }
    con = duckdb.connect()
    con.execute("SET memory_limit = '2GB'")  # winback's default engine.memory_limit
    took = {}
    for name, sql in pieces.items():
        t0 = time.perf_counter()
        con.execute(sql).fetchall()
        took[name] = time.perf_counter() - t0
    rows = con.execute("SELECT count(*) FROM b").fetchall()[0][0]
    return rows, took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(_run_case(args.case, args.path)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    report: dict = {"cutoff": f"{CUTOFF:%Y-%m-%d}", "rounds": args.rounds, "sizes": {}}
    for n in sizes:
        path = _data_file(n)
        runs: dict[str, list[dict]] = {c: [] for c in CASES}
        for r in range(args.rounds):
            for case in CASES:
                out = subprocess.run(
                    [sys.executable, __file__, "--case", case, "--path", str(path)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                res = json.loads(out.stdout.strip().splitlines()[-1])
                runs[case].append(res)
                print(
                    f"{n:>11,} orders  round {r + 1}  case {case}: {res['wall_s']:7.2f} s  "
                    f"{res['peak_rss_mb']:8.0f} MB  rows {res['rows']:,}",
                    flush=True,
                )
        med = {
            c: {
                "wall_s": statistics.median(x["wall_s"] for x in runs[c]),
                "peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in runs[c]),
                "rows": runs[c][0]["rows"],
                **(
                    {"load_s": statistics.median(x["load_s"] for x in runs[c])}
                    if "load_s" in runs[c][0]
                    else {}
                ),
            }
            for c in CASES
        }
        med["e"]["pieces_s"] = {
            k: statistics.median(x["pieces_s"][k] for x in runs["e"])
            for k in runs["e"][0]["pieces_s"]
        }
        ratios = {
            "b_over_a": med["b"]["wall_s"] / med["a"]["wall_s"],
            "a_over_c": med["a"]["wall_s"] / med["c"]["wall_s"],
            "d_over_a": med["d"]["wall_s"] / med["a"]["wall_s"],
            "e_over_c": med["e"]["wall_s"] / med["c"]["wall_s"],
        }
        report["sizes"][str(n)] = {"median": med, "ratios": ratios, "runs": runs}

    RESULTS.mkdir(parents=True, exist_ok=True)
    out_file = RESULTS / "features.json"
    out_file.write_text(json.dumps(report, indent=2))
    print("\nmedians of", args.rounds, "rounds (wall s / peak RSS MB)")
    print(
        f"{'orders':>11}  {'a duckdb':>16}  {'b pandas':>16}  {'c floor':>16}  "
        f"{'d 6 cutoffs':>16}  {'e least work':>16}  b/a    a/c    d/a    e/c"
    )
    for n, rep in report["sizes"].items():
        m, q = rep["median"], rep["ratios"]
        cells = "  ".join(f"{m[c]['wall_s']:7.2f} / {m[c]['peak_rss_mb']:6.0f}" for c in CASES)
        print(
            f"{int(n):>11,}  {cells}  {q['b_over_a']:5.2f}  {q['a_over_c']:5.2f}  "
            f"{q['d_over_a']:5.2f}  {q['e_over_c']:5.2f}"
        )
        floor = m["c"]["wall_s"]
        for piece, secs in m["e"]["pieces_s"].items():
            print(f"{'':>11}  e: {piece:<28} {secs:6.2f} s  {secs / floor:5.1f}x the floor")
    print("targets at 10M: b/a >= 3, a/c <= 10, d/a <= 4, peak RSS of a and d <= 3072 MB")
    print(f"written to {out_file}")


if __name__ == "__main__":
    main()
