"""The churn model: LightGBM on stacked snapshots, calibrated, saved with a checksum.

``fit`` takes snapshot rows from several cutoffs. A share of the customers (chosen by a hash of
the id, so the same on every run) is held out whole: rows of one customer at neighbouring
cutoffs share most of their label window, so holding out a cutoff of customers the booster saw
would reward memorising them. LightGBM trains on the other customers with early stopping on the
held-out customers' rows (by ROC-AUC, which class weights do not bias), then a logistic (Platt)
calibrator on the logit of the raw score is fitted on the held-out customers' rows at the most
recent ``calibration_cutoffs`` cutoffs. Platt scaling is monotone, so it fixes the
probabilities (which class weighting shifts) without changing the ranking. The evaluation
cutoff of a backtest is never among the training rows.
"""

from __future__ import annotations

import inspect
import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import lightgbm as lgb
import numpy as np
import pandas as pd
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from winback.atomic import atomic_path, sha256_file
from winback.errors import DataError, WinbackError

__all__ = [
    "ChurnModel",
    "NON_FEATURES",
    "DRIFT_FEATURES",
    "feature_columns",
    "population_stability",
    "save_model",
    "load_model",
]

#: Features whose distribution the drift guard compares with training (plus p_churn).
#: Rows scored at a time.
PREDICT_BLOCK_ROWS = 250_000

DRIFT_FEATURES = (
    "recency_days",
    "n_orders",
    "monetary_total",
    "tenure_days",
    "bgnbd_p_no_purchase",
)

#: Snapshot columns that are keys or labels, never features.
NON_FEATURES = frozenset({"customer_id", "cutoff_ts", "churned", "orders_in_horizon"})


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The numeric feature columns of a snapshot frame, in frame order."""
    return [
        c
        for c in frame.columns
        if c not in NON_FEATURES and pd.api.types.is_numeric_dtype(frame[c])
    ]


def _held_out(customer_id: pd.Series, share: float, seed: int) -> np.ndarray:
    """A reproducible share of customers (by a seeded hash of the id), as a row mask."""
    h = pd.util.hash_pandas_object(customer_id.astype(str), index=False, hash_key=f"{seed:016d}")
    return ((h.to_numpy() % 10_000) < int(round(share * 10_000))).astype(bool)


def _eval_args(X: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
    """The validation set in the spelling of the installed LightGBM (eval_X from 4.6 on)."""
    if "eval_X" in inspect.signature(lgb.LGBMClassifier.fit).parameters:
        return {"eval_X": (X,), "eval_y": (y,)}
    return {"eval_set": [(X, y)]}


def _flat_tree(tree: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """One tree of LightGBM's model dump as arrays: feature (-1 at leaves), threshold,
    default_left, missing type (0 None, 1 Zero, 2 NaN), left, right, node value."""
    feat, thr, dleft, miss, left, right, value = [], [], [], [], [], [], []
    stack: list[tuple[dict, int, str]] = []

    def add(node: dict) -> int:
        i = len(feat)
        leaf = "leaf_value" in node
        if not leaf and node.get("decision_type") != "<=":
            raise ValueError("path contributions support numeric splits only")
        feat.append(-1 if leaf else node["split_feature"])
        thr.append(0.0 if leaf else node["threshold"])
        dleft.append(False if leaf else node["default_left"])
        miss.append(0 if leaf else {"None": 0, "Zero": 1, "NaN": 2}[node["missing_type"]])
        left.append(-1)
        right.append(-1)
        value.append(node["leaf_value"] if leaf else node["internal_value"])
        if not leaf:
            stack.append((node["left_child"], i, "l"))
            stack.append((node["right_child"], i, "r"))
        return i

    add(tree["tree_structure"])
    while stack:
        child, parent, side = stack.pop()
        (left if side == "l" else right)[parent] = add(child)
    return (
        np.array(feat),
        np.array(thr),
        np.array(dleft),
        np.array(miss),
        np.array(left),
        np.array(right),
        np.array(value, dtype=float),
    )


def _path_contributions(
    booster: lgb.Booster, X: np.ndarray, num_iteration: int, chunk_rows: int = 16_384
) -> np.ndarray:
    """Saabas contributions, the last column the bias. Rows walk every tree together, in
    chunks that keep the gathers in cache (about twice as fast as all rows at once)."""
    trees = [
        _flat_tree(t)
        for t in booster.dump_model(num_iteration=num_iteration)["tree_info"][:num_iteration]
    ]
    n, m = X.shape
    out = np.zeros((n, m + 1))
    for start in range(0, n, chunk_rows):
        xs = X[start : start + chunk_rows]
        acc = out[start : start + chunk_rows]
        rows = np.arange(xs.shape[0])
        for feat, thr, dleft, miss, left, right, value in trees:
            node = np.zeros(xs.shape[0], dtype=np.int64)
            acc[:, m] += value[0]
            active = rows if feat[0] >= 0 else rows[:0]
            while active.size:
                nd = node[active]
                f = feat[nd]
                x = xs[active, f]
                nan = np.isnan(x)
                mt = miss[nd]
                # LightGBM's missing values: NaN is missing with type NaN; NaN and 0 with type
                # Zero; with type None NaN counts as 0
                x0 = np.where(nan & (mt != 2), 0.0, x)
                missing = np.where(mt == 2, nan, (mt == 1) & (nan | (x0 == 0.0)))
                go_left = np.where(missing, dleft[nd], x0 <= thr[nd])
                child = np.where(go_left, left[nd], right[nd])
                acc[active, f] += value[child] - value[nd]  # one node per row per step
                node[active] = child
                active = active[feat[child] >= 0]
    return out


def _bins(values: np.ndarray, n: int = 10) -> dict[str, list[float]]:
    """Decile edges of ``values`` and the share of values in each bin."""
    v = values[np.isfinite(values)]
    edges = np.unique(np.quantile(v, np.linspace(0, 1, n + 1)[1:-1])) if v.size else np.array([])
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=edges.size + 1)
    return {"edges": edges.tolist(), "shares": (counts / max(v.size, 1)).tolist()}


def population_stability(reference: dict[str, list[float]], values: np.ndarray) -> float:
    """PSI = sum((actual - expected) x ln(actual / expected)) over the reference bins."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    edges = np.asarray(reference["edges"])
    expected = np.clip(np.asarray(reference["shares"]), 1e-4, None)
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=edges.size + 1)
    actual = np.clip(counts / max(v.size, 1), 1e-4, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


class ChurnModel(ClassifierMixin, BaseEstimator):
    """Calibrated LightGBM churn classifier trained on stacked snapshots.

    Parameters
    ----------
    horizon_days, lookback_days : int
        The label horizon and population lookback the snapshots were built with (metadata).
    n_estimators : int
        Most boosting rounds; early stopping picks fewer.
    learning_rate, num_leaves, min_child_samples, subsample, colsample_bytree, reg_lambda
        LightGBM settings.
    holdout_share : float
        Share of customers held out for early stopping and calibration.
    calibration_cutoffs : int
        How many of the most recent cutoffs of the held-out customers calibrate.
    balance_classes : bool
        Weight classes equally while boosting (calibration restores the probabilities).
    random_state : int
        Seed for LightGBM.
    """

    def __init__(
        self,
        horizon_days: int = 90,
        lookback_days: int = 365,
        n_estimators: int = 2000,
        learning_rate: float = 0.03,
        num_leaves: int = 15,
        min_child_samples: int = 100,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        holdout_share: float = 0.2,
        calibration_cutoffs: int = 1,
        balance_classes: bool = True,
        random_state: int = 42,
    ):
        self.horizon_days = horizon_days
        self.lookback_days = lookback_days
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.holdout_share = holdout_share
        self.calibration_cutoffs = calibration_cutoffs
        self.balance_classes = balance_classes
        self.random_state = random_state

    def _booster(self) -> lgb.LGBMClassifier:
        return lgb.LGBMClassifier(
            objective="binary",
            metric="auc",
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            subsample=self.subsample,
            subsample_freq=1,
            colsample_bytree=self.colsample_bytree,
            reg_lambda=self.reg_lambda,
            class_weight="balanced" if self.balance_classes else None,
            random_state=self.random_state,
            deterministic=True,
            force_row_wise=True,
            n_jobs=2,
            verbose=-1,
        )

    def fit(self, X: pd.DataFrame, y: pd.Series | np.ndarray) -> ChurnModel:
        """Fit on snapshot rows ``X`` (with ``cutoff_ts``) and labels ``y`` (1 = churned)."""
        if "cutoff_ts" not in X.columns or "customer_id" not in X.columns:
            raise DataError(
                "ChurnModel.fit needs 'customer_id' and 'cutoff_ts' columns to hold out "
                "customers and recent cutoffs."
            )
        y = np.asarray(y, dtype=int)
        cutoffs = np.sort(X["cutoff_ts"].unique())
        k = int(self.calibration_cutoffs)
        hold = _held_out(X["customer_id"], self.holdout_share, self.random_state)
        calib = hold & X["cutoff_ts"].isin(cutoffs[-k:]).to_numpy()
        self.features_ = feature_columns(X)
        Xf = X[self.features_].astype(float)
        for part, mask in (("training", ~hold), ("calibration", calib)):
            if len(np.unique(y[mask])) < 2:
                raise DataError(
                    f"The {part} rows hold only one class ({int(mask.sum())} rows); "
                    "churned and retained customers are both needed."
                )
        booster = self._booster()
        booster.fit(
            Xf[~hold],
            y[~hold],
            **_eval_args(Xf[hold], y[hold]),
            callbacks=[lgb.early_stopping(100, verbose=False)],
        )
        self.booster_ = booster
        self.best_iteration_ = int(booster.best_iteration_ or self.n_estimators)
        raw = booster.predict_proba(Xf[calib], num_iteration=self.best_iteration_)[:, 1]
        self.calibrator_ = LogisticRegression(C=1e6).fit(_logit(raw)[:, None], y[calib])
        self.classes_ = np.array([0, 1])
        self.training_cutoffs_ = [pd.Timestamp(c).isoformat() for c in cutoffs]
        self.calibration_cutoffs_ = [pd.Timestamp(c).isoformat() for c in cutoffs[-k:]]
        self.n_training_rows_ = int((~hold).sum())
        self.versions_ = {
            "python": platform.python_version(),
            "lightgbm": lgb.__version__,
            "scikit-learn": sklearn.__version__,
            "pandas": pd.__version__,
        }
        self.fitted_at_ = datetime.now(UTC).isoformat(timespec="seconds")
        latest = X[X["cutoff_ts"] == cutoffs[-1]]
        ref = {f: latest[f].to_numpy(dtype=float) for f in DRIFT_FEATURES if f in latest.columns}
        ref["p_churn"] = self.predict_proba(latest)[:, 1]
        self.reference_ = {name: _bins(values) for name, values in ref.items()}
        return self

    def drift(self, X: pd.DataFrame, p_churn: np.ndarray) -> dict[str, float]:
        """Population stability index of each drift feature and of ``p_churn`` against the
        model's latest training cutoff (0 = same distribution; above 0.25 = a large shift)."""
        ref = getattr(self, "reference_", None) or {}
        now = {f: X[f].to_numpy(dtype=float) for f in ref if f in X.columns}
        now["p_churn"] = np.asarray(p_churn, dtype=float)
        return {f: population_stability(ref[f], v) for f, v in now.items() if f in ref}

    def _check(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.features_ if c not in X.columns]
        if missing:
            raise DataError(
                f"The model needs features it was trained with; missing {missing[:5]} "
                f"({len(missing)} in all). Build them with the same winback version and config."
            )
        return X[self.features_].astype(float)

    def predict_raw(self, X: pd.DataFrame) -> np.ndarray:
        """LightGBM's uncalibrated score (in blocks of rows, so a large frame is never copied
        whole into the model's float matrix)."""
        out = np.empty(len(X), dtype=float)
        for i in range(0, len(X), PREDICT_BLOCK_ROWS):
            block = self._check(X.iloc[i : i + PREDICT_BLOCK_ROWS])
            out[i : i + len(block)] = self.booster_.predict_proba(
                block, num_iteration=self.best_iteration_
            )[:, 1]
        return out

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated ``[P(retained), P(churned)]`` per row."""
        p = self.calibrator_.predict_proba(_logit(self.predict_raw(X))[:, None])[:, 1]
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def contributions(self, X: pd.DataFrame, method: str = "shap") -> pd.DataFrame:
        """Per-row feature contributions to the raw log-odds.

        ``shap``: LightGBM's exact TreeSHAP values. ``path``: each split on a row's path in each
        tree credits its feature with the change in the node value (Saabas); several times
        faster, and like SHAP the contributions plus the bias add up to the raw score exactly.
        """
        Xf = self._check(X)
        if method == "shap":
            c = self.booster_.predict(Xf, num_iteration=self.best_iteration_, pred_contrib=True)
        elif method == "path":
            c = _path_contributions(
                self.booster_.booster_, Xf.to_numpy(dtype=float), self.best_iteration_
            )
        else:
            raise ValueError(f"method must be 'shap' or 'path'; got {method!r}")
        return pd.DataFrame(c[:, :-1], columns=self.features_, index=X.index)

    def feature_importance(self) -> pd.Series:
        """Total gain per feature, largest first."""
        gain = self.booster_.booster_.feature_importance(importance_type="gain")
        return pd.Series(gain, index=self.features_).sort_values(ascending=False)

    def metadata(self) -> dict[str, Any]:
        """What the model was trained on and with (for manifests and tracking)."""
        return {
            "horizon_days": self.horizon_days,
            "lookback_days": self.lookback_days,
            "features": list(self.features_),
            "training_cutoffs": self.training_cutoffs_,
            "calibration_cutoffs": self.calibration_cutoffs_,
            "n_training_rows": self.n_training_rows_,
            "best_iteration": self.best_iteration_,
            "versions": self.versions_,
            "fitted_at": self.fitted_at_,
            "data_fingerprint": getattr(self, "data_fingerprint_", None),
        }


def save_model(model: ChurnModel, path: str | Path) -> Path:
    """Save with joblib, plus ``<path>.json`` holding the metadata and the file's sha256."""
    path = Path(path)
    with atomic_path(path) as tmp:
        joblib.dump(model, tmp)
        digest = sha256_file(tmp)
    meta = {**model.metadata(), "sha256": digest, "file": path.name}
    with atomic_path(path.with_suffix(path.suffix + ".json")) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    return path


def load_model(path: str | Path) -> ChurnModel:
    """Load a saved model after checking its sha256 against the metadata file."""
    path = Path(path)
    meta_path = path.with_suffix(path.suffix + ".json")
    if not path.is_file():
        raise WinbackError(f"Model file {path} does not exist; train one or pass another path.")
    if not meta_path.is_file():
        raise WinbackError(
            f"Model metadata {meta_path} is missing, so {path} cannot be verified; "
            "save models with winback."
        )
    want = json.loads(meta_path.read_text()).get("sha256")
    got = sha256_file(path)
    if got != want:
        raise WinbackError(
            f"Model file {path} does not match its checksum (sha256 {got[:12]}..., expected "
            f"{str(want)[:12]}...): it was changed or damaged; retrain or restore it."
        )
    model = joblib.load(path)
    if not isinstance(model, ChurnModel):
        raise WinbackError(f"{path} does not hold a winback ChurnModel.")
    return model
