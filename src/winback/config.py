"""Typed configuration: load YAML, apply ``key=value`` overrides, validate.

Every setting has a default here, so an empty file (or none) is a valid configuration. The
committed ``configs/default.yaml`` spells the same defaults out with comments.
"""

from __future__ import annotations

import codecs
import copy
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from winback.errors import ConfigError

__all__ = [
    "Config",
    "EngineConfig",
    "SparkConfig",
    "OrdersConfig",
    "ColumnsConfig",
    "ReturnsConfig",
    "PoliciesConfig",
    "FeaturesConfig",
    "LabelsConfig",
    "SufficiencyConfig",
    "TrainingConfig",
    "ModelConfig",
    "EvaluationConfig",
    "TrackingConfig",
    "CampaignsConfig",
    "DriftConfig",
    "MeasureConfig",
    "ReportConfig",
    "CampaignGroupConfig",
    "load_config",
    "apply_overrides",
    "format_validation_error",
]

Policy = Literal["drop", "keep", "fail"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ColumnsConfig(_Section):
    """Which input column holds each field of the orders contract (input names, any spelling)."""

    customer_id: str = "customer_id"
    order_id: str | None = Field(
        "order_id",
        description="Optional: without it, ids are made from customer, day and a counter.",
    )
    order_ts: str = "order_ts"
    amount: str | None = Field(
        "amount", description="Net order (or line) value; null when quantity x unit_price is used."
    )
    quantity: str | None = None
    unit_price: str | None = None
    category: str | None = None
    channel: str | None = None
    status: str | None = None


class ReturnsConfig(_Section):
    """How a cancellation or return is recognised. Any rule that matches marks the row."""

    negative_amount: bool = True
    status_values: list[str] = Field(default_factory=list)
    order_id_prefix: str | None = None


class PoliciesConfig(_Section):
    """What to do with each kind of bad row: drop it (and count it), keep it, or fail."""

    unparsable_date: Literal["drop", "fail"] = "drop"
    null_customer_id: Literal["drop", "fail"] = "drop"
    duplicate_line: Policy = "drop"
    duplicate_order_id: Literal["drop", "keep", "fail"] = "drop"
    future_date: Policy = "drop"
    bad_amount: Literal["drop", "fail"] = "drop"
    absurd_amount: Policy = "drop"
    zero_amount: Policy = "keep"
    control_characters: Policy = "keep"
    conflicting_customer: Literal["drop", "fail"] = "fail"


#: strftime directives (after %, or %-) that the engines parse dates with.
_DIRECTIVES = set("abcdfghjmnpuwxyzABGHIMSTUVWXYZ%")


class CsvConfig(_Section):
    """CSV dialect; ``auto`` lets DuckDB's sniffer decide."""

    delimiter: str = Field(
        "auto", description="auto, whitespace, or one character such as ',', ';', '\\t', '|'."
    )
    header: bool = True
    encoding: str = Field(
        "utf-8", description="The file's text encoding: utf-8, latin-1, cp1252, utf-16, ..."
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(
                f"{v!r} is not a known text encoding; use e.g. utf-8, latin-1, cp1252 or utf-16"
            ) from None
        return v


class OrdersConfig(_Section):
    """Where the order history is and how to read it into the orders contract."""

    source: str | None = None
    format: Literal["auto", "csv", "parquet", "duckdb"] = "auto"
    table: str | None = Field(
        None, description="The table, when the source is a DuckDB file or a database URL."
    )
    query: str | None = Field(None, description="A SELECT instead of a table (database URLs).")
    password_env: str = Field(
        "WINBACK_DB_PASSWORD", description="Environment variable with the database password."
    )
    chunk_rows: int = Field(100_000, ge=1, description="Rows fetched from a database per chunk.")
    csv: CsvConfig = Field(default_factory=CsvConfig)
    columns: ColumnsConfig = Field(default_factory=ColumnsConfig)
    date_format: str = Field(
        "auto",
        description="auto (ISO, YYYYMMDD or Unix epoch numbers) or a strftime format such as "
        "%d/%m/%Y %H:%M.",
    )
    timezone: str = Field("UTC", description="Zone of timestamps that carry none; stored as UTC.")
    lines: Literal["auto", "yes", "no"] = Field(
        "auto", description="One row per order line (aggregate to orders): auto, yes or no."
    )
    returns: ReturnsConfig = Field(default_factory=ReturnsConfig)
    max_abs_amount: float = Field(1_000_000.0, gt=0)
    policies: PoliciesConfig = Field(default_factory=PoliciesConfig)

    @field_validator("date_format")
    @classmethod
    def _strftime_format(cls, v: str) -> str:
        if v == "auto":
            return v
        directives = re.findall(r"%-?(.?)", v)
        if not directives:
            raise ValueError(
                f"{v!r} has no % directive; write it as a strftime format such as "
                "%d/%m/%Y %H:%M (dd/MM/yyyy is spelled %d/%m/%Y), or auto"
            )
        bad = sorted({f"%{c}" for c in directives if c not in _DIRECTIVES})
        if bad:
            raise ValueError(
                f"{v!r} has {', '.join(bad)}, not a date directive; use "
                "%Y %y %m %b %B %d %j %H %I %p %M %S %f %z %Z (e.g. %d/%m/%Y %H:%M), or auto"
            )
        return v

    @model_validator(mode="after")
    def _amount_or_price(self) -> OrdersConfig:
        cols = self.columns
        has_lines = cols.quantity is not None and cols.unit_price is not None
        if cols.amount is None and not has_lines:
            raise ValueError(
                "columns.amount is null, so both columns.quantity and columns.unit_price "
                "must name input columns (amount = quantity x unit_price)"
            )
        return self


class FeaturesConfig(_Section):
    """Point-in-time feature settings."""

    lookback_days: int = Field(365, ge=1, description="Active population: an order in (T - L, T].")
    windows_days: list[int] = Field(default_factory=lambda: [30, 90, 180, 365])

    @field_validator("windows_days")
    @classmethod
    def _windows_positive(cls, v: list[int]) -> list[int]:
        if not v or any(w < 1 for w in v):
            raise ValueError("windows_days must be a non-empty list of whole days >= 1")
        return sorted(set(v))


class LabelsConfig(_Section):
    """Churn label: no purchase in (T, T + horizon_days]."""

    horizon_days: int = Field(90, ge=1)


class SufficiencyConfig(_Section):
    """Minimum data the sufficiency gate asks for before training."""

    min_customers: int = Field(500, ge=1)
    min_repeat_buyers: int = Field(200, ge=1)
    min_per_class: int = Field(50, ge=1)


class SparkConfig(_Section):
    """The Spark engine's session: master URL and any Spark settings."""

    master: str = Field(
        "local[*]",
        description="Spark master URL; WINBACK_SPARK_MASTER overrides it, spark-submit sets it.",
    )
    conf: dict[str, str] = Field(
        default_factory=dict, description="Spark settings, e.g. spark.executor.memory: 8g."
    )


class EngineConfig(_Section):
    """Where and how features run. DuckDB spills to ``temp_directory`` past ``memory_limit``."""

    name: Literal["duckdb", "spark"] = Field(
        "duckdb", description="duckdb (one machine) or spark (pip install 'winback[spark]')."
    )
    memory_limit: str = Field("2GB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
    threads: int | None = Field(None, ge=1, description="Default: every core.")
    temp_directory: str | None = Field(None, description="Spill folder; default DuckDB's .tmp.")
    compiled_trees: bool = Field(
        True,
        description="Score with the model's trees compiled to native code when lleaves is "
        "installed (pip install 'winback[fast]'), cached next to the model file; false: "
        "LightGBM's predictor.",
    )
    carry_features: bool = Field(
        True,
        description="Nightly score of a large population on DuckDB: keep the features in the "
        "exports folder (.features/) and, the next night, carry them for every customer whose "
        "orders did not change, computing only the others; false: compute every customer's.",
    )
    spark: SparkConfig = Field(default_factory=SparkConfig)


class TrainingConfig(_Section):
    """Which snapshots a model learns from: cutoffs every ``spacing_days`` back from T - H."""

    spacing_days: int = Field(14, ge=1)
    n_cutoffs: int = Field(24, ge=2)
    holdout_share: float = Field(
        0.2, gt=0, lt=1, description="Customers held out: half stop boosting, half choose."
    )


class ModelConfig(_Section):
    """The churn model: which candidate, and LightGBM's settings."""

    candidate: Literal["auto", "btyd", "boosted_btyd", "boosted"] = Field(
        "auto",
        description="auto: the candidate held-out customers prefer; or force BG/NBD alone "
        "(btyd), boosting from BG/NBD (boosted_btyd) or from scratch (boosted).",
    )
    n_estimators: int = Field(2000, ge=1)
    learning_rate: float = Field(0.1, gt=0, le=1)
    num_leaves: int = Field(15, ge=2)
    min_child_samples: int = Field(100, ge=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)
    early_stopping_rounds: int = Field(30, ge=1)
    max_bin: int = Field(63, ge=2, le=1023)
    max_training_rows: int | None = Field(
        250_000, ge=1000, description="Rows that train the boosters at most (whole customers)."
    )


class EvaluationConfig(_Section):
    """How backtests are scored."""

    n_bootstrap: int = Field(500, ge=50)


class TrackingConfig(_Section):
    """MLflow: where runs go (default MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."""

    uri: str | None = None
    password_env: str = Field(
        "WINBACK_TRACKING_PASSWORD",
        description="Environment variable with a database tracking store's password.",
    )
    experiment: str = "winback"
    model_name: str = "winback-churn"


class CampaignGroupConfig(_Section):
    """One campaign group: who is in it, what they are offered, and what it costs.

    A customer joins the first group (in config order) whose rules all hold. ``list`` is
    ``at_risk`` or ``lapsed``; ``min_spend_share`` takes the customers whose spend over the last
    365 days is in the top share of that list (0.2 = the top 20%).
    """

    name: str
    list: Literal["at_risk", "lapsed"] = "at_risk"
    min_order_days: int | None = Field(None, ge=1)
    max_order_days: int | None = Field(None, ge=1)
    min_spend_share: float | None = Field(None, gt=0, le=1)
    offer: str
    channel: str = "email"
    contact_cost: float = Field(0.1, ge=0)
    offer_cost: float = Field(0.0, ge=0)
    save_rate: float = Field(0.1, ge=0, le=1)
    capacity: int | None = Field(None, ge=0)


def _default_groups() -> list[CampaignGroupConfig]:
    return [
        CampaignGroupConfig(
            name="high_spenders",
            min_spend_share=0.2,
            offer="VIP offer and free shipping",
            contact_cost=0.5,
            offer_cost=8.0,
            save_rate=0.2,
        ),
        CampaignGroupConfig(
            name="repeat_buyers",
            min_order_days=2,
            offer="loyalty points",
            contact_cost=0.1,
            offer_cost=2.0,
            save_rate=0.1,
        ),
        CampaignGroupConfig(
            name="one_time_buyers",
            max_order_days=1,
            offer="discount on the second purchase",
            contact_cost=0.1,
            offer_cost=3.0,
            save_rate=0.08,
        ),
        CampaignGroupConfig(
            name="lapsed",
            list="lapsed",
            offer="reactivation offer",
            contact_cost=0.1,
            offer_cost=5.0,
            save_rate=0.05,
        ),
    ]


class CampaignsConfig(_Section):
    """Win-back lists: groups and offers, control group, list size."""

    groups: list[CampaignGroupConfig] = Field(default_factory=_default_groups)
    control_share: float = Field(0.10, ge=0, lt=1)
    salt: str = "winback"
    size_by: Literal["profit", "top_k", "threshold"] = "profit"
    top_k: int | None = Field(None, ge=0)
    threshold: float | None = Field(None, ge=0, le=1)
    reactivation_days: int = Field(730, ge=1)
    value_days: int = Field(
        365,
        ge=1,
        description="Customer value: spend over these last days (or, for a customer with no "
        "purchase in them, what they spent per value_days while buying).",
    )
    min_p_churn: float | None = Field(
        0.5,
        ge=0,
        le=1,
        description="A customer is listed only at this churn probability or above (null: any).",
    )
    recent_days: int = Field(
        14,
        ge=0,
        description="Customers who bought within this many days before the as-of are not "
        "contacted (0: no such rule).",
    )
    currency: str | None = Field(
        None,
        description="The currency of the amounts (e.g. USD, EUR), stated in every list file.",
    )
    contact_history: str | None = Field(
        None, description="CSV or Parquet with customer_id and contacted_at (past contacts)."
    )
    cooldown_days: int = Field(30, ge=0)
    opt_out: str | None = Field(None, description="CSV or Parquet with a customer_id column.")
    reasons_method: Literal["auto", "shap", "path"] = Field(
        "auto", description="Contributions behind reasons; auto: shap up to 50k listed customers."
    )
    learned: str | None = Field(
        None,
        description="learned.json written by 'winback learn': its save rates size the lists "
        "instead of the groups' own (null: the groups' save_rate).",
    )
    rank_by: Literal["p_churn", "uplift", "auto"] = Field(
        "auto",
        description="How lists are ranked and sized: p_churn (expected gain from the groups' "
        "save rates); uplift (expected incremental profit from the uplift model of "
        "campaigns.learned, which must have been judged better than p_churn on a campaign it "
        "did not see); auto: uplift when campaigns.learned holds such a model, else p_churn.",
    )
    learn_prior_sd: float = Field(
        0.1,
        gt=0,
        le=1,
        description="How far 'winback learn' believes a group's save rate may be from its "
        "save_rate (the prior's standard deviation): smaller trusts the config longer.",
    )


class DriftConfig(_Section):
    """Drift guard of the nightly job (population stability index against training)."""

    warn_psi: float = Field(0.10, ge=0)
    fail_psi: float = Field(0.25, ge=0)


class MeasureConfig(_Section):
    """Campaign readout: treatment against control after an export."""

    window_days: int | None = Field(
        None, ge=1, description="Outcome window after the as-of; null: labels.horizon_days."
    )
    min_control: int = Field(
        100, ge=1, description="Warn when a control group has fewer customers than this."
    )


class ReportConfig(_Section):
    """Retention report."""

    period: Literal["month", "quarter", "year"] = "month"
    active_days: int | None = Field(
        None,
        ge=1,
        description="Active = a purchase in this many days; null: features.lookback_days.",
    )
    exports_dir: str = Field("exports", description="Where 'score' writes; read for list figures.")
    max_readouts: int = Field(6, ge=0, description="Campaign readouts of the latest exports.")


class Config(_Section):
    """The whole winback configuration."""

    engine: EngineConfig = Field(default_factory=EngineConfig)
    orders: OrdersConfig = Field(default_factory=OrdersConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    sufficiency: SufficiencyConfig = Field(default_factory=SufficiencyConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    campaigns: CampaignsConfig = Field(default_factory=CampaignsConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    models_dir: str = "models"
    random_state: int = 42

    @model_validator(mode="after")
    def _lookback_covers_the_horizon(self) -> Config:
        lookback, horizon = self.features.lookback_days, self.labels.horizon_days
        if lookback < horizon:
            raise ValueError(
                f"features.lookback_days ({lookback}) is shorter than labels.horizon_days "
                f"({horizon}): the at-risk list (a last order within {horizon} days) would hold "
                f"customers the model never saw (it learns from those who bought within "
                f"{lookback} days); set lookback_days to {horizon} or more"
            )
        return self

    @field_validator("engine", mode="before")
    @classmethod
    def _engine_by_name(cls, v: Any) -> Any:
        """``engine: spark`` is short for ``engine: {name: spark}``."""
        return {"name": v} if isinstance(v, str) else v

    def model_params(self) -> dict:
        """Constructor settings of :class:`winback.model.ChurnModel` from this config."""
        return {
            **self.model.model_dump(),
            "holdout_share": self.training.holdout_share,
            "lookback_days": self.features.lookback_days,
            "random_state": self.random_state,
        }


def format_validation_error(exc: ValidationError, origin: str) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "is not a known setting (check the spelling against configs/default.yaml)"
        elif err["type"] == "literal_error":
            allowed = err.get("ctx", {}).get("expected", "")
            msg = f"must be one of {allowed}"
        if err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            if not err["loc"]:  # a rule across settings
                parts.append(msg)
                continue
        got = err.get("input")
        said = err["type"] == "extra_forbidden" or repr(got) in msg
        got_txt = "" if said else f"; got {got!r}"
        parts.append(f"'{key}' {msg}{got_txt}")
    return f"{origin}: " + "; ".join(parts)


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``dotted.key=value`` applied (values parsed as YAML).

    >>> apply_overrides({}, ["labels.horizon_days=30"])
    {'labels': {'horizon_days': 30}}
    """
    out = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(
                f"Override {item!r} must look like key=value, e.g. labels.horizon_days=90."
            )
        key, _, value = item.partition("=")
        keys = [k for k in key.strip().split(".") if k]
        if not keys:
            raise ConfigError(f"Override {item!r} has no key before '='.")
        node = out
        for k in keys[:-1]:
            nxt = node.get(k)
            if not isinstance(nxt, dict):
                nxt = {}
                node[k] = nxt
            node = nxt
        try:
            node[keys[-1]] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            node[keys[-1]] = value
    return out


#: Settings that name a file or folder: in a config file, relative to the file's own folder.
PATH_SETTINGS = (
    ("orders", "source"),
    ("campaigns", "contact_history"),
    ("campaigns", "opt_out"),
    ("campaigns", "learned"),
    ("report", "exports_dir"),
    ("engine", "temp_directory"),
    ("models_dir",),
)


def _paths_from(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``raw`` with the relative paths it names (and a relative SQLite tracking store) made
    absolute against ``folder``, so a config works from any working directory. URLs
    (``s3a://``, ``postgresql://``...) and absolute paths are left as they are."""
    out = copy.deepcopy(raw)

    def resolve(value: Any) -> Any:
        if not isinstance(value, str) or not value or "://" in value:
            return value
        path = Path(value).expanduser()
        return value if path.is_absolute() else str(folder / path)

    for keys in PATH_SETTINGS:
        node = out
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and keys[-1] in node:
            node[keys[-1]] = resolve(node[keys[-1]])
    tracking = out.get("tracking")
    uri = tracking.get("uri") if isinstance(tracking, dict) else None
    if isinstance(uri, str) and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        tracking["uri"] = "sqlite:///" + str(folder / uri.removeprefix("sqlite:///"))
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides.

    Relative paths written in the file are read from the file's folder (``--set`` values and
    the built-in defaults from the working directory).

    Parameters
    ----------
    path : str or Path, optional
        A YAML file holding any subset of the settings (``configs/default.yaml`` lists them all).
    overrides : list of str, optional
        ``key=value`` pairs applied after the file, e.g. ``labels.horizon_days=60``; values are
        read as YAML.

    Returns
    -------
    Config
        The validated configuration.

    Raises
    ------
    ConfigError
        When the file is missing, is not YAML, or a setting fails validation; the message names
        the key, what was expected and what was got.
    """
    raw: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        p = Path(path)
        origin = str(p)
        if p.is_dir():
            raise ConfigError(f"Config file {p} is a folder; pass the YAML file inside it.")
        if not p.is_file():
            raise ConfigError(f"Config file {p} does not exist; pass an existing YAML file.")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            line = p.read_bytes()[: exc.start].count(b"\n") + 1
            raise ConfigError(
                f"Config file {p} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line "
                f"{line}); save it as UTF-8."
            ) from None
        except OSError as exc:
            raise ConfigError(f"Config file {p} cannot be read ({exc.strerror}).") from None
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            where = f" near line {line + 1}" if line is not None else ""
            raise ConfigError(f"Config file {p} is not valid YAML{where}.") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"Config file {p} must hold a mapping of settings at the top level.")
        raw = _paths_from(loaded, p.resolve().parent)
    raw = apply_overrides(raw, overrides)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from None
