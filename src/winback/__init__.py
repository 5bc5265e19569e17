"""winback: churn prediction and win-back target lists from order histories.

Library use::

    from winback import load_config, load_orders, build_features, build_labels
    cfg = load_config("configs/cdnow.yaml")
    orders = load_orders(cfg.orders.source, cfg.orders)
    feats = build_features(orders, ["1998-03-31"], lookback_days=365)
    labels = build_labels(orders, ["1998-03-31"], horizon_days=91)
"""

__version__ = "0.1.0"

from winback.config import Config, load_config  # noqa: E402
from winback.errors import (  # noqa: E402
    ConfigError,
    DataError,
    InsufficientDataError,
    UsageError,
    WinbackError,
)
from winback.features import build_features  # noqa: E402
from winback.labels import build_labels  # noqa: E402
from winback.orders import Orders, load_orders  # noqa: E402
from winback.profile import build_profile, check_sufficiency  # noqa: E402
from winback.synth import SynthParams, generate_orders  # noqa: E402

__all__ = [
    "__version__",
    "Config",
    "load_config",
    "WinbackError",
    "ConfigError",
    "DataError",
    "InsufficientDataError",
    "UsageError",
    "Orders",
    "load_orders",
    "build_features",
    "build_labels",
    "build_profile",
    "check_sufficiency",
    "SynthParams",
    "generate_orders",
]
