"""The churn model: boosted from the BTYD prediction, chosen against it, saved with a checksum.

No-regret by construction. ``fit`` takes snapshot rows from several cutoffs and builds three
candidates:

- ``btyd``: BG/NBD's own P(no order in H), fitted at each cutoff on the data up to it (the
  ``bgnbd_p_no_purchase`` column), as it is;
- ``boosted_btyd``: LightGBM started from the logit of that probability (its ``init_score``), so
  the trees learn corrections to BG/NBD; none at all means BG/NBD itself, and the corrections
  are shrunk towards it (a weight in 0, 0.25, ..., 1 chosen on held-out customers);
- ``boosted``: LightGBM started from the base rate, with BG/NBD's quantities among its features,
  its log-odds blended with BG/NBD's (a weight on the trees in 0.25, ..., 1 chosen on held-out
  customers: a blend of logits often beats both when the trees learnt part of the picture).

A share of the customers (chosen by a hash of the id, so the same on every run) is held out
whole, since rows of one customer at neighbouring cutoffs share most of their label window:
half of them stop the boosting early (log loss), the other half choose the candidate with the
lowest log loss over their rows at every training cutoff (each season and length of history the
training data covers), so the choice never sees the rows a booster learnt from. A learnt
candidate must beat BG/NBD by more than twice the standard error of the difference (customers
as clusters): when BG/NBD is the truth, noise the trees happened to fit does not replace it.

Boosting minimises log loss without class weights, from a probability (BG/NBD's or the base
rate), so its output is a probability; the candidates' calibration on the held-out customers
is recorded. A Platt step fitted on past cutoffs was measured to make the next cutoff's
probabilities worse, not better, when the base rate moves, so there is none. The evaluation
cutoff of a backtest is never among the training rows.
"""

from __future__ import annotations

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

from winback.atomic import atomic_path, sha256_file
from winback.drift import DRIFT_FEATURES, bin_counts, reference_bins, stability
from winback.errors import DataError, WinbackError
from winback.explain import LIGHTGBM_LOCK, path_contributions
from winback.progress import Progress
from winback.sample import customer_share

__all__ = [
    "CANDIDATES",
    "ChurnModel",
    "NON_FEATURES",
    "feature_columns",
    "save_model",
    "load_model",
    "check_model_file",
]

#: The candidates ``fit`` chooses among, simplest first (ties go to the simpler one).
CANDIDATES = ("btyd", "boosted_btyd", "boosted")

#: Rows scored at a time.
PREDICT_BLOCK_ROWS = 250_000

#: The BTYD probability the base margin is made of.
BTYD_COLUMN = "bgnbd_p_no_purchase"

#: A learnt candidate replaces BG/NBD only when its held-out log loss is lower by more than
#: this many standard errors of the difference (clustered by customer).
BTYD_MARGIN_SE = 2.0

#: Weights of the trees' corrections tried for ``boosted_btyd`` (0 = BG/NBD alone).
SHRINK_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


#: Snapshot columns that are keys or labels, never features.
NON_FEATURES = frozenset(
    {
        "customer_id",
        "cutoff_ts",
        "churned",
        "orders_in_horizon",
        # BG/NBD's posterior of the purchase rate: for the timing of the next order only
        "bgnbd_posterior_r",
        "bgnbd_posterior_alpha",
    }
)


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The numeric feature columns of a snapshot frame, in frame order."""
    return [
        c
        for c in frame.columns
        if c not in NON_FEATURES and pd.api.types.is_numeric_dtype(frame[c])
    ]


def feature_matrix(X: pd.DataFrame, features: list[str], needs: str, fix: str) -> np.ndarray:
    """``X``'s ``features`` as a float matrix (C order: a row's features side by side; missing
    values NaN), or a DataError saying which are missing: "<needs>; missing [...] (n in all).
    <fix>"."""
    missing = [c for c in features if c not in X.columns]
    if missing:
        raise DataError(f"{needs}; missing {missing[:5]} ({len(missing)} in all). {fix}")
    # a column at a time into a feature's row, then turned so that a customer's features lie
    # side by side (the order the predictors read): a few large copies, where pandas' own
    # conversion of a slice of a wide frame took 5 to 9 times as long (a quarter of a million
    # rows: 250 to 430 ms against 48), and many small ones stall while another thread holds
    # Python's lock
    by_feature = np.empty((len(features), len(X)), dtype=float)
    for j, c in enumerate(features):
        by_feature[j] = X[c].to_numpy(dtype=float, na_value=np.nan)
    return np.ascontiguousarray(by_feature.T)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _log_loss(y: np.ndarray, margin: np.ndarray) -> float:
    """Mean log loss of margins (log-odds of y = 1)."""
    return float(np.mean(np.logaddexp(0.0, -(2 * y - 1) * margin)))


def _paired_gap(
    y: np.ndarray, simple: np.ndarray, learnt: np.ndarray, customers: np.ndarray
) -> tuple[float, float]:
    """How much lower the learnt margins' mean log loss is than the simple ones', and the
    standard error of that difference with the rows of one customer as one cluster."""
    diff = np.logaddexp(0.0, -(2 * y - 1) * simple) - np.logaddexp(0.0, -(2 * y - 1) * learnt)
    per_customer = pd.Series(diff).groupby(customers).sum().to_numpy()
    n = diff.size
    se = float(np.sqrt(per_customer.size) * per_customer.std(ddof=1) / n)
    return float(diff.mean()), se


def _scores(y: np.ndarray, margin: np.ndarray) -> dict[str, float]:
    """How a candidate does on the selection rows (for the metadata and tracking)."""
    from winback.evaluate import fast_auc, lift_at

    p = _sigmoid(margin)
    return {
        "log_loss": _log_loss(y, margin),
        "auc": fast_auc(y, margin),
        "brier": float(np.mean((p - y) ** 2)),
        "lift_10": lift_at(y, margin, 0.10),
        "mean_p": float(p.mean()),
        "churn_rate": float(y.mean()),
    }


class ChurnModel(ClassifierMixin, BaseEstimator):
    """Churn classifier on stacked snapshots: BG/NBD, or LightGBM from it or from scratch,
    whichever held-out customers prefer (see the module's docstring).

    Parameters
    ----------
    horizon_days, lookback_days : int
        The label horizon and population lookback the snapshots were built with (metadata).
    candidate : {"auto", "btyd", "boosted_btyd", "boosted"}
        ``auto`` chooses on held-out customers; a name forces that candidate.
    n_estimators : int
        Most boosting rounds; early stopping picks fewer.
    learning_rate, num_leaves, min_child_samples, subsample, colsample_bytree, reg_lambda
        LightGBM settings.
    early_stopping_rounds : int
        Rounds without a better held-out log loss before boosting stops.
    max_bin : int
        Histogram bins per feature (63: as accurate here as 255, and faster).
    holdout_share : float
        Share of customers held out: half stop the boosting, half choose the candidate.
    max_training_rows : int or None
        At most this many rows train the boosters (a seeded sample of whole customers); the
        held-out customers are never sampled.
    random_state : int
        Seed for the held-out split, the sample and LightGBM.
    """

    def __init__(
        self,
        horizon_days: int = 90,
        lookback_days: int = 365,
        candidate: str = "auto",
        n_estimators: int = 2000,
        learning_rate: float = 0.1,
        num_leaves: int = 15,
        min_child_samples: int = 100,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        early_stopping_rounds: int = 30,
        max_bin: int = 63,
        holdout_share: float = 0.2,
        max_training_rows: int | None = 250_000,
        random_state: int = 42,
    ):
        self.horizon_days = horizon_days
        self.lookback_days = lookback_days
        self.candidate = candidate
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.max_bin = max_bin
        self.holdout_share = holdout_share
        self.max_training_rows = max_training_rows
        self.random_state = random_state

    def _params(self) -> dict[str, Any]:
        return {
            "objective": "binary",
            "metric": "binary_logloss",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "bagging_fraction": self.subsample,
            "bagging_freq": 1 if self.subsample < 1 else 0,
            "feature_fraction": self.colsample_bytree,
            "lambda_l2": self.reg_lambda,
            "max_bin": self.max_bin,
            "seed": self.random_state,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 2,
            "verbose": -1,
        }

    def _split(self, X: pd.DataFrame, y: np.ndarray):
        """Row masks: training, early stopping, selection (the last two: held-out customers)."""
        ids = X["customer_id"]
        hold = customer_share(ids, self.holdout_share, self.random_state)
        stop = hold & customer_share(ids, 0.5, self.random_state + 1)
        choose = hold & ~stop
        train = ~hold
        n_train = int(train.sum())
        if self.max_training_rows is not None and n_train > self.max_training_rows:
            share = self.max_training_rows / n_train
            train &= customer_share(ids, share, self.random_state + 2)
        for part, mask in (("training", train), ("early-stopping", stop), ("selection", choose)):
            if len(np.unique(y[mask])) < 2:
                raise DataError(
                    f"The {part} rows hold only one class ({int(mask.sum())} rows); "
                    "churned and retained customers are both needed."
                )
        return train, stop, choose

    def fit(
        self, X: pd.DataFrame, y: pd.Series | np.ndarray, progress: Progress | None = None
    ) -> ChurnModel:
        """Fit on snapshot rows ``X`` (with ``customer_id``, ``cutoff_ts`` and the BG/NBD
        feature ``bgnbd_p_no_purchase``) and labels ``y`` (1 = churned).

        ``progress(stage, done, total)`` is told of each boosting round."""
        missing = {"customer_id", "cutoff_ts", BTYD_COLUMN} - set(X.columns)
        if missing:
            raise DataError(
                f"ChurnModel.fit needs the column(s) {sorted(missing)}: the customer and cutoff "
                "hold customers out, and BG/NBD's probability is the base margin. Build the "
                "rows with winback.snapshots.build_snapshots."
            )
        if self.candidate not in ("auto", *CANDIDATES):
            raise ValueError(
                f"candidate must be 'auto' or one of {CANDIDATES}; got {self.candidate!r}"
            )
        y = np.asarray(y, dtype=int)
        train, stop, choose = self._split(X, y)
        cutoffs = np.sort(X["cutoff_ts"].unique())
        self.features_ = feature_columns(X)
        Xf = X[self.features_].to_numpy(dtype=float)
        margin = _logit(X[BTYD_COLUMN].to_numpy())
        self.margin_mean_ = float(margin[train].mean())

        boosters: dict[str, tuple[lgb.Booster | None, int]] = {}
        fit_set = lgb.Dataset(
            Xf[train], y[train], params={"max_bin": self.max_bin}, free_raw_data=False
        )
        stop_set = lgb.Dataset(Xf[stop], y[stop], reference=fit_set)
        for name, init in (("boosted", None), ("boosted_btyd", margin)):
            if self.candidate not in ("auto", name):
                continue
            if init is not None:
                fit_set.set_init_score(init[train])
                stop_set.set_init_score(init[stop])
            booster = self._boost(fit_set, stop_set, name, progress)
            n_trees = int(booster.best_iteration or booster.current_iteration())
            if init is not None:  # no tree at all when BG/NBD alone stops best
                best = booster.best_score["valid_0"]["binary_logloss"]
                if _log_loss(y[stop], init[stop]) <= best:
                    n_trees = 0
            boosters[name] = (booster, n_trees)

        ys = y[choose]
        rows = Xf[choose]
        table, margins = {}, {}
        for name in CANDIDATES:
            if self.candidate not in ("auto", name):
                continue
            shrink, btyd_weight = (0.0, 1.0) if name == "btyd" else (1.0, 0.0)
            if name == "btyd":
                z = margin[choose]
            elif name == "boosted":  # the trees' log-odds, blended with BG/NBD's
                booster, n_trees = boosters[name]
                trees = booster.predict(rows, num_iteration=n_trees, raw_score=True)
                weights = [w for w in SHRINK_GRID if w > 0]  # 0 would be btyd itself
                losses = [_log_loss(ys, (1 - w) * margin[choose] + w * trees) for w in weights]
                shrink = weights[int(np.argmin(losses))]
                btyd_weight = 1.0 - shrink
                z = btyd_weight * margin[choose] + shrink * trees
            else:
                booster, n_trees = boosters[name]
                trees = (
                    booster.predict(rows, num_iteration=n_trees, raw_score=True)
                    if n_trees
                    else np.zeros(len(ys))
                )
                losses = [_log_loss(ys, margin[choose] + w * trees) for w in SHRINK_GRID]
                shrink, btyd_weight = SHRINK_GRID[int(np.argmin(losses))], 1.0
                z = margin[choose] + shrink * trees
            margins[name] = z
            table[name] = {
                **_scores(ys, z),
                "n_trees": boosters[name][1] if name in boosters else 0,
                "shrink": shrink,
                "btyd_weight": btyd_weight,
            }
        best = min(table, key=lambda n: (table[n]["log_loss"], CANDIDATES.index(n)))
        if "btyd" in table and best != "btyd":
            # a learnt candidate must beat BG/NBD by more than the noise of the comparison
            ids = X["customer_id"].to_numpy()[choose]
            gap, se = _paired_gap(ys, margins["btyd"], margins[best], ids)
            table[best]["gain_over_btyd"], table[best]["gain_over_btyd_se"] = gap, se
            if gap <= BTYD_MARGIN_SE * se:
                best = "btyd"
        self.candidate_ = best
        self.selection_ = table
        self.shrink_ = float(table[best]["shrink"])
        self.n_trees_ = int(table[best]["n_trees"])
        self.booster_ = boosters[best][0] if best in boosters and self.n_trees_ else None
        self.btyd_weight_ = float(table[best]["btyd_weight"])
        self.selection_rows_ = int(choose.sum())

        self.classes_ = np.array([0, 1])
        self.training_cutoffs_ = [pd.Timestamp(c).isoformat() for c in cutoffs]
        self.n_training_rows_ = int(train.sum())
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
        self.reference_ = {name: reference_bins(values) for name, values in ref.items()}
        return self

    def _boost(self, fit_set, stop_set, name: str, progress: Progress | None) -> lgb.Booster:
        callbacks = [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]
        if progress is not None:

            def report(env) -> None:
                progress(f"boosting ({name})", env.iteration + 1, env.end_iteration)

            callbacks.append(report)
        return lgb.train(
            self._params(),
            fit_set,
            num_boost_round=self.n_estimators,
            valid_sets=[stop_set],
            callbacks=callbacks,
        )

    def drift(self, X: pd.DataFrame, p_churn: np.ndarray) -> dict[str, float]:
        """Population stability index of each drift feature and of ``p_churn`` against the
        model's latest training cutoff (0 = same distribution; above 0.25 = a large shift)."""
        return self.drift_of(self.drift_counts(X, p_churn))

    def drift_counts(self, X: pd.DataFrame, p_churn: np.ndarray) -> dict[str, np.ndarray]:
        """How many of the customers ``X`` fall in each reference bin of each drift feature and
        of ``p_churn``: the counts of parts of a population add up to the whole's."""
        ref = getattr(self, "reference_", None) or {}
        now = {f: X[f].to_numpy(dtype=float) for f in ref if f in X.columns}
        now["p_churn"] = np.asarray(p_churn, dtype=float)
        return {f: bin_counts(ref[f], v) for f, v in now.items() if f in ref}

    def drift_of(self, counts: dict[str, np.ndarray]) -> dict[str, float]:
        """The population stability index of each of :meth:`drift_counts`."""
        return {f: stability(self.reference_[f], c) for f, c in counts.items()}

    def _check(self, X: pd.DataFrame) -> np.ndarray:
        return feature_matrix(
            X,
            self.features_,
            "The model needs features it was trained with",
            "Build them with the same winback version and config.",
        )

    @property
    def uses_margin_(self) -> bool:
        """Whether BG/NBD's log-odds are part of the margin."""
        return self.btyd_weight_ > 0

    def _trees(self, Xf: np.ndarray) -> np.ndarray:
        """The trees' part of the margin (already shrunk)."""
        if self.booster_ is None:
            return np.zeros(len(Xf))
        compiled = getattr(self, "compiled_", None)
        if compiled is not None:
            raw = compiled.raw(Xf)
        else:
            raw = self.booster_.predict(Xf, num_iteration=self.n_trees_, raw_score=True)
        return self.shrink_ * raw

    def compile_trees(self, model_file: str | Path | None = None) -> str:
        """Predict with the trees compiled to native code from now on, when the optional
        lleaves package is installed (:mod:`winback.compiled`; cached next to ``model_file``);
        return which predictor scores: ``compiled (lleaves <version>)`` or ``lightgbm
        <version>``, LightGBM's own, kept when lleaves is missing or compiling fails."""
        from winback.compiled import compile_trees

        self.compiled_ = (
            None
            if self.booster_ is None
            else compile_trees(
                self.booster_, self.n_trees_, None if model_file is None else Path(model_file)
            )
        )
        return self.predictor

    @property
    def predictor(self) -> str:
        """Which predictor scores: the compiled trees' or LightGBM's own."""
        if self.booster_ is None:
            return "BG/NBD alone (no trees)"
        compiled = getattr(self, "compiled_", None)
        return compiled.label if compiled is not None else f"lightgbm {lgb.__version__}"

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("compiled_", None)  # native code belongs to this process, not the file
        return state

    def predict_margin(self, X: pd.DataFrame) -> np.ndarray:
        """The log-odds of churn: BG/NBD's (for the candidates built on it) plus the trees'
        corrections, in blocks of rows, so a large frame is never copied whole."""
        out = np.empty(len(X), dtype=float)
        for i in range(0, len(X), PREDICT_BLOCK_ROWS):
            block = X.iloc[i : i + PREDICT_BLOCK_ROWS]
            z = self._trees(self._check(block))
            if self.uses_margin_:
                z = z + self.btyd_weight_ * _logit(block[BTYD_COLUMN].to_numpy())
            out[i : i + len(block)] = z
        return out

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """``[P(retained), P(churned)]`` per row. With no trees on top of BG/NBD, the
        probability is BG/NBD's own, exactly (not a round trip through its logit)."""
        if self.uses_margin_ and self.booster_ is None:
            self._check(X.head(0))
            p = X[BTYD_COLUMN].to_numpy(dtype=float)
        else:
            p = _sigmoid(self.predict_margin(X))
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    @property
    def bias_(self) -> float:
        """What the contributions of :meth:`contributions` are measured from with ``path``:
        the trees' root values plus the mean BG/NBD margin of the training rows."""
        return float(self.btyd_weight_ * self.margin_mean_)

    def contributions(self, X: pd.DataFrame, method: str = "shap") -> pd.DataFrame:
        """Per-row feature contributions to the churn log-odds.

        The trees' part: ``shap`` is LightGBM's exact TreeSHAP; ``path`` credits each split on
        a row's path with the change in the node value (Saabas), several times faster, and like
        SHAP adds up exactly with its bias. The BG/NBD margin (for the candidates built on it)
        is credited to ``bgnbd_p_no_purchase``, measured from its mean over the training rows.
        """
        if method not in ("shap", "path"):
            raise ValueError(f"method must be 'shap' or 'path'; got {method!r}")
        Xf = self._check(X)
        if self.booster_ is None:
            # column-major, as path contributions come and as pandas holds a frame's columns
            c = np.zeros((len(self.features_), len(Xf))).T
        else:
            if method == "shap":
                with LIGHTGBM_LOCK:
                    full = self.booster_.predict(Xf, num_iteration=self.n_trees_, pred_contrib=True)
            else:
                full = path_contributions(self.booster_, Xf, self.n_trees_)
            del Xf
            full *= self.shrink_  # in place, and kept: a block's contributions held once
            c = full[:, :-1]  # the bias column left out
        if self.uses_margin_:
            j = self.features_.index(BTYD_COLUMN)
            c[:, j] += self.btyd_weight_ * (_logit(X[BTYD_COLUMN].to_numpy()) - self.margin_mean_)
        return pd.DataFrame(c, columns=self.features_, index=X.index, copy=False)

    def feature_importance(self) -> pd.Series:
        """Total gain per feature, largest first; BG/NBD alone puts it all on its probability."""
        if self.booster_ is None:
            gain = np.zeros(len(self.features_))
        else:
            gain = self.booster_.feature_importance("gain", iteration=self.n_trees_)
        imp = pd.Series(gain, index=self.features_, dtype=float)
        if self.uses_margin_ and not imp.any():
            imp[BTYD_COLUMN] = 1.0
        return imp.sort_values(ascending=False)

    def choice(self) -> dict[str, Any]:
        """The candidate chosen, its trees and weight, and every candidate's scores on the
        held-out customers that chose it."""
        return {
            "candidate": self.candidate_,
            "n_trees": self.n_trees_,
            "shrink": self.shrink_,
            "btyd_weight": self.btyd_weight_,
            "selection_rows": self.selection_rows_,
            "candidates": self.selection_,
        }

    def metadata(self) -> dict[str, Any]:
        """What the model was trained on and with (for manifests and tracking)."""
        return {
            "horizon_days": self.horizon_days,
            "lookback_days": self.lookback_days,
            **self.choice(),
            "features": list(self.features_),
            "training_cutoffs": self.training_cutoffs_,
            "n_training_rows": self.n_training_rows_,
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


def check_model_file(path: str | Path) -> dict:
    """The metadata of a saved model after checking the model file against its sha256; cheap
    (no unpickling), so a command can check its model before any work."""
    path = Path(path)
    meta_path = path.with_suffix(path.suffix + ".json")
    if not path.is_file():
        raise WinbackError(f"Model file {path} does not exist; train one or pass another path.")
    if not meta_path.is_file():
        raise WinbackError(
            f"Model metadata {meta_path} is missing, so {path} cannot be verified; "
            "save models with winback."
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise WinbackError(
            f"Model metadata {meta_path} is not the JSON winback writes{where}; restore it "
            "from the model's MLflow run or retrain."
        ) from None
    want = meta.get("sha256") if isinstance(meta, dict) else None
    if not isinstance(want, str):
        raise WinbackError(
            f"Model metadata {meta_path} holds no sha256 of the model, so {path} cannot be "
            "verified; restore it from the model's MLflow run or retrain."
        )
    got = sha256_file(path)
    if got != want:
        raise WinbackError(
            f"Model file {path} does not match its checksum (sha256 {got[:12]}..., expected "
            f"{want[:12]}...): it was changed or damaged; retrain or restore it."
        )
    return meta


def load_model(path: str | Path) -> ChurnModel:
    """Load a saved model after checking its sha256 against the metadata file."""
    path = Path(path)
    check_model_file(path)
    try:
        model = joblib.load(path)
    except Exception as exc:  # not a pickle, or one written by incompatible library versions
        raise WinbackError(
            f"{path} cannot be loaded as a winback model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}); retrain it with "
            "this version of winback."
        ) from None
    if not isinstance(model, ChurnModel):
        raise WinbackError(
            f"{path} does not hold a winback ChurnModel; pass a file saved by train."
        )
    return model
