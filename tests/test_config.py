"""Config: defaults, YAML, overrides, and errors that name the key."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from winback.config import Config, apply_overrides, load_config
from winback.errors import ConfigError


def test_committed_default_yaml_equals_the_built_in_defaults():
    assert load_config(ROOT / "configs" / "default.yaml") == Config()


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(
        None,
        ["labels.horizon_days=30", "features.windows_days=[7, 30]", "orders.columns.order_id=null"],
    )
    assert cfg.labels.horizon_days == 30
    assert cfg.features.windows_days == [7, 30]
    assert cfg.orders.columns.order_id is None


def test_override_without_equals_is_refused():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["labels.horizon_days"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "labels.horizon_days=0",
            "'labels.horizon_days' Input should be greater than or equal to 1; got 0",
        ),
        (
            "orders.policies.future_date=ignore",
            "'orders.policies.future_date' must be one of 'drop', 'keep' or 'fail'; got 'ignore'",
        ),
        ("orders.colums.customer_id=x", "'orders.colums' is not a known setting"),
        ("features.windows_days=[0]", "windows_days must be a non-empty list"),
    ],
)
def test_bad_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(None, [override])


def test_amount_or_quantity_and_price_is_required():
    with pytest.raises(ConfigError, match="columns.quantity and columns.unit_price"):
        load_config(None, ["orders.columns.amount=null"])


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_engine_can_be_given_by_name_alone(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("engine: spark\n")
    cfg = load_config(path)
    assert cfg.engine.name == "spark" and cfg.engine.spark.master == "local[*]"
    assert load_config(None, ["engine=duckdb"]).engine.name == "duckdb"
    assert load_config(None, ["engine.name=spark"]).engine.name == "spark"
