"""Orders from a real PostgreSQL server, started by this module (Debian's postgresql package).

The server listens on 127.0.0.1 with password (SCRAM) authentication, so the password must come
from the environment variable; it is checked never to appear in what winback prints.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from winback.config import OrdersConfig
from winback.engines.duckdb import connect
from winback.errors import DataError
from winback.orders import load_orders
from winback.orders.database import read_database, redact_url

PASSWORD = "Pg-s3cret-7f2a"  # the test role's password; must never be printed
TRACKING_PASSWORD = "Tr@ck-9x:p/w"  # the MLflow store's, with characters a URL must encode
COLUMNS = {"category": "category", "channel": "channel"}


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres(synth_frame):
    """A PostgreSQL server with a role 'shop' (password PASSWORD) and the synthetic orders in
    table public.orders; yields the URL without the password."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.fail("PostgreSQL's server programs are needed (Debian: apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="winback-pg-"))
    base.chmod(0o755)
    as_root = os.geteuid() == 0
    if as_root:  # the server refuses to run as root: run it as the postgres system user
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)

    def run(*cmd: str) -> None:
        full = ["runuser", "-u", "postgres", "--", *cmd] if as_root else list(cmd)
        subprocess.run(full, check=True, capture_output=True, timeout=120)

    port = _free_port()
    data = base / "data"
    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "admin", "--auth-local=trust",
        "--auth-host=scram-sha-256")  # fmt: skip
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-o",
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start")  # fmt: skip
    try:
        import psycopg

        admin = f"host={base} port={port} user=admin dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute(f"CREATE ROLE shop LOGIN PASSWORD '{PASSWORD}'")
            con.execute("CREATE DATABASE shop OWNER shop")
            con.execute(f"CREATE ROLE mlflow LOGIN PASSWORD '{TRACKING_PASSWORD}'")
            con.execute("CREATE DATABASE mlflow OWNER mlflow")
        with psycopg.connect(f"host={base} port={port} user=admin dbname=shop") as con:
            con.execute(
                """CREATE TABLE public.orders (customer_id text, order_id text,
                       order_ts timestamptz, amount numeric(12, 2), category text, channel text)"""
            )
            cols = ["customer_id", "order_id", "order_ts", "amount", "category", "channel"]
            with con.cursor().copy(f"COPY public.orders ({', '.join(cols)}) FROM STDIN") as cp:
                for row in synth_frame[cols].itertuples(index=False):
                    cp.write_row(row)
            con.execute("ALTER TABLE public.orders OWNER TO shop")
        yield f"postgresql+psycopg://shop@127.0.0.1:{port}/shop"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def password(monkeypatch):
    monkeypatch.setenv("WINBACK_DB_PASSWORD", PASSWORD)


def cfg(**extra) -> OrdersConfig:
    return OrdersConfig.model_validate({"columns": COLUMNS, "table": "orders", **extra})


def test_database_orders_equal_the_same_orders_from_parquet(
    postgres, password, synth_frame, tmp_path
):
    path = tmp_path / "orders.parquet"
    synth_frame.to_parquet(path, index=False)
    from_file = load_orders(path, cfg())
    from_db = load_orders(postgres, cfg(chunk_rows=1000))
    assert from_db.fingerprint() == from_file.fingerprint()
    assert from_db.report.summary_lines()[1:] == from_file.report.summary_lines()[1:]
    assert from_db.report.source == f"{postgres} (table orders)"


def test_a_table_larger_than_a_chunk_is_streamed_in_chunks(postgres, password, synth_frame):
    seen: list[int] = []
    con = connect()
    read_database(con, postgres, cfg(chunk_rows=1000), on_chunk=seen.append)
    n = len(synth_frame)
    assert n > 5000  # several chunks of 1,000
    # one call per chunk, each 1,000 rows more than the last but the final one
    assert seen == [*range(1000, n, 1000), n] or seen == list(range(1000, n + 1, 1000))
    assert con.execute("SELECT count(*) FROM _raw").fetchall()[0][0] == n


def test_a_query_instead_of_a_table(postgres, password):
    sql = "SELECT * FROM orders WHERE channel = 'web'"
    orders = load_orders(postgres, cfg(table=None, query=sql))
    web = load_orders(postgres, cfg()).to_pandas().query("channel == 'web'")
    assert len(orders) == len(web) > 0


def test_without_the_password_variable_the_error_says_which_to_set(postgres, monkeypatch):
    monkeypatch.delenv("WINBACK_DB_PASSWORD", raising=False)
    with pytest.raises(DataError, match=r"WINBACK_DB_PASSWORD"):
        load_orders(postgres, cfg())


def test_a_wrong_password_is_refused_without_being_printed(postgres, monkeypatch):
    monkeypatch.setenv("WINBACK_DB_PASSWORD", "wrong-" + PASSWORD)
    with pytest.raises(DataError) as err:
        load_orders(postgres, cfg())
    assert "password authentication failed" in str(err.value)
    assert PASSWORD not in str(err.value)


def test_a_missing_table_lists_the_tables(postgres, password):
    with pytest.raises(DataError, match=r"no table 'order'.*orders"):
        load_orders(postgres, cfg(table="order"))


def test_redact_url_masks_the_password():
    assert redact_url("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.slow
def test_cli_reads_the_database_and_never_prints_the_password(postgres, tmp_path):
    exe = Path(sys.executable).with_name("winback")
    env = {**os.environ, "WINBACK_DB_PASSWORD": PASSWORD}
    args = ["--set", "orders.table=orders", "--set", "orders.chunk_rows=2000"]
    res = subprocess.run(
        [str(exe), "-v", "validate", postgres, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"from {postgres} (table orders)" in res.stdout
    # a password written into the URL is used, warned about and masked too
    with_pw = postgres.replace("shop@", f"shop:{PASSWORD}@")
    env.pop("WINBACK_DB_PASSWORD")
    res2 = subprocess.run(
        [str(exe), "-v", "validate", with_pw, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert res2.returncode == 0, res2.stderr[-2000:]
    assert "carries a password" in res2.stderr
    for r in (res, res2):
        assert PASSWORD not in r.stdout + r.stderr


def test_database_urls_are_told_from_paths():
    from winback.orders.database import is_database_url

    assert is_database_url("postgresql://u@h/db")
    assert is_database_url("postgresql+psycopg://u@h:5432/db")
    assert is_database_url("mysql+pymysql://u@h/db")
    assert not is_database_url("s3a://bucket/orders/")
    assert not is_database_url("orders.parquet")
    assert not is_database_url("/data/postgresql://odd-name.csv")


FAST = [
    "--set", "training.spacing_days=30", "--set", "training.n_cutoffs=6",
    "--set", "evaluation.n_bootstrap=50", "--set", "model.n_estimators=60",
]  # fmt: skip


def _tracking_run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("winback")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def test_a_tracking_database_is_tried_once_before_any_work(postgres):
    """MLflow retries a refused store for about 100 s; one connection says the same at once."""
    from winback.errors import WinbackError
    from winback.secrets import with_password
    from winback.tracking import writable_store

    store = postgres.replace("shop@", "mlflow@").rsplit("/", 1)[0] + "/mlflow"
    writable_store(with_password(store, TRACKING_PASSWORD))  # answers: nothing to say
    wrong = with_password(store, "wrong-" + TRACKING_PASSWORD)
    with pytest.raises(WinbackError, match="password authentication failed") as err:
        writable_store(wrong)
    assert "mlflow:***@" in str(err.value) and "ck-9x" not in str(err.value)
    closed = store.rsplit(":", 1)[0] + ":9/mlflow"  # nothing listens on port 9
    with pytest.raises(WinbackError, match=r"Cannot use the MLflow tracking store.*refused"):
        writable_store(closed)


@pytest.mark.slow
def test_a_tracking_database_password_is_never_printed_or_written(postgres, synth_frame, tmp_path):
    from urllib.parse import quote

    synth_frame.to_parquet(tmp_path / "orders.parquet", index=False)
    store = postgres.replace("shop@", "mlflow@").rsplit("/", 1)[0] + "/mlflow"
    env = {**os.environ, "WINBACK_TRACKING_PASSWORD": TRACKING_PASSWORD}
    env.pop("MLFLOW_TRACKING_URI", None)
    common = ["--orders", "orders.parquet", "--set", f"tracking.uri={store}", *FAST]
    runs = [
        _tracking_run(
            ["backtest", "--as-of", "2023-09-01", "--horizon-days", "60", "--out", "bt", *common],
            tmp_path,
            env,
        ),  # fmt: skip
        _tracking_run(
            ["train", "--as-of", "2023-12-01", "--horizon-days", "60", *common], tmp_path, env
        ),  # fmt: skip
        _tracking_run(["score", "--out", "exports", *common], tmp_path, env),
    ]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    # the store is named, its password (from the variable) masked
    assert "in " + store.replace("mlflow@", "mlflow:***@") in runs[0].stdout
    assert "champion" in runs[1].stdout
    # an unreachable store (nothing listens on port 9) and a URL with the password written in
    wrong = _tracking_run(
        ["backtest", "--as-of", "2023-09-01", "--horizon-days", "60", "--out", "bt2", *common,
         "--set", "tracking.uri=" + store.replace("mlflow@", f"mlflow:{quote(TRACKING_PASSWORD, safe='')}@").rsplit(":", 1)[0] + ":9/mlflow"],
        tmp_path, env,
    )  # fmt: skip
    assert wrong.returncode == 1 and "mlflow:***@" in wrong.stderr
    # an '@' in the password left unencoded: refused, and not echoed
    raw = store.replace("mlflow@", f"mlflow:{TRACKING_PASSWORD}@")
    refused = _tracking_run(["train", *common, "--set", f"tracking.uri={raw}"], tmp_path, env)
    assert refused.returncode == 1 and "more than one '@'" in refused.stderr
    secrets = (TRACKING_PASSWORD, quote(TRACKING_PASSWORD, safe=""), "ck-9x")
    for r in [*runs, wrong, refused]:
        for secret in secrets:
            assert secret not in r.stdout + r.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in data, path
