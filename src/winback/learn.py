"""What past campaigns teach: each campaign group's save rate, from its treatment and control
groups, pooled over campaigns and shrunk towards the config's prior when the evidence is thin.

The save rate is what the lists' cost model calls it (:func:`winback.campaigns.expected_gain`):
the share of would-be churners a contact saves. Among the customers of a group's lists (treated
and held out alike, so both are customers the group would have listed), with ``r_t`` and
``r_c`` the shares of treatment and control who bought in the outcome window, pooled over the
group's campaigns:

    incremental retention  d = r_t - r_c
    save rate              s = d / (1 - r_c)     (the control's churners that a contact saved)

with the delta-method variance ``v = r_t(1-r_t)/n_t / (1-r_c)^2 + r_c(1-r_c)/n_c (1-r_t)^2 /
(1-r_c)^4``. The learned rate is the posterior mean of a normal prior centred on the config's
save rate ``s0`` with standard deviation ``prior_sd``, given a normal likelihood ``N(s, v)``:

    learned = w s + (1 - w) s0,   w = prior_sd^2 / (prior_sd^2 + v)

with the 95% interval ``learned +- 1.96 sqrt(w v)`` (the posterior's). A control of 5 customers
leaves the prior almost where it was; one of 5,000 moves it almost all the way to the estimate.
A group with no control customers, or whose control all bought, keeps its prior. Groups whose
shares are all 0 or 1 (no sampling variance by the formula) get the variance that shares of one
half would have.
"""

from __future__ import annotations

import math

import pandas as pd

from winback.errors import DataError

__all__ = ["save_rates", "rates_by_export", "SAVE_RATE_COLUMNS"]

_Z = 1.959963984540054

#: The columns of :func:`save_rates`, and what each holds.
SAVE_RATE_COLUMNS = {
    "campaign": "the campaign group",
    "n_campaigns": "past campaigns (exports) with this group whose outcome window has passed",
    "n_treatment": "treated customers, over those campaigns",
    "n_control": "held-out customers, over those campaigns",
    "retention_treatment": "share of the treated who bought in the window",
    "retention_control": "share of the held out who bought in the window",
    "incremental_retention": "retention_treatment - retention_control",
    "save_rate_observed": "incremental_retention / (1 - retention_control)",
    "save_rate_observed_se": "its standard error (delta method)",
    "prior": "the config's save rate for the group",
    "save_rate": "the learned rate: the observed one shrunk towards the prior",
    "save_rate_lo": "lower end of its 95% interval",
    "save_rate_hi": "upper end of its 95% interval",
    "weight": "how much of the learned rate is the observed one (0: all prior)",
}


def save_rates(
    outcomes: pd.DataFrame, priors: dict[str, float], prior_sd: float = 0.1
) -> pd.DataFrame:
    """Each campaign group's learned save rate (:data:`SAVE_RATE_COLUMNS`, one row per group
    of ``priors``, in their order).

    ``outcomes`` has one row per listed customer of a past campaign: ``campaign`` (the group),
    ``export`` (which campaign: its as-of or folder), ``group`` (``treatment`` or ``control``)
    and ``bought`` (whether they bought in the outcome window)."""
    missing = [c for c in ("campaign", "export", "group", "bought") if c not in outcomes]
    if missing:
        raise DataError(
            f"Campaign outcomes need the columns campaign, export, group and bought; "
            f"missing {missing} ({len(outcomes)} rows)."
        )
    odd = ~outcomes["group"].isin(["treatment", "control"])
    if odd.any():
        raise DataError(
            f"{int(odd.sum())} outcome row(s) have a group other than treatment or control, "
            f"e.g. {outcomes.loc[odd, 'group'].iloc[0]!r}: fix the lists they came from."
        )
    if prior_sd <= 0:
        raise ValueError(f"prior_sd must be > 0; got {prior_sd}")
    rows = []
    for name, prior in priors.items():
        mine = outcomes[outcomes["campaign"] == name]
        treated = mine["group"] == "treatment"
        bought = mine["bought"].astype(bool)
        nt, nc = int(treated.sum()), int((~treated).sum())
        rt = float(bought[treated].mean()) if nt else math.nan
        rc = float(bought[~treated].mean()) if nc else math.nan
        s, v = _observed(rt, rc, nt, nc)
        if math.isnan(s):  # nothing to learn from: the prior stands
            w, learned, half = 0.0, prior, _Z * prior_sd
        else:
            w = prior_sd**2 / (prior_sd**2 + v)
            learned = w * s + (1 - w) * prior
            half = _Z * math.sqrt(w * v)
        rows.append(
            {
                "campaign": name,
                "n_campaigns": int(mine["export"].nunique()),
                "n_treatment": nt,
                "n_control": nc,
                "retention_treatment": rt,
                "retention_control": rc,
                "incremental_retention": rt - rc,
                "save_rate_observed": s,
                "save_rate_observed_se": math.sqrt(v) if v == v else math.nan,
                "prior": float(prior),
                "save_rate": learned,
                "save_rate_lo": learned - half,
                "save_rate_hi": learned + half,
                "weight": w,
            }
        )
    return pd.DataFrame(rows, columns=list(SAVE_RATE_COLUMNS))


def _observed(rt: float, rc: float, nt: int, nc: int) -> tuple[float, float]:
    """The observed save rate and its delta-method variance; NaN when there is none (no
    treated or held-out customers, or a control that all bought)."""
    if not nt or not nc or not rc < 1.0:
        return math.nan, math.nan
    q = 1.0 - rc
    s = (rt - rc) / q
    var_t = rt * (1 - rt) / nt
    var_c = rc * (1 - rc) / nc
    v = var_t / q**2 + var_c * (1 - rt) ** 2 / q**4
    if v == 0:  # unanimous groups (shares of 0 or 1): the variance shares of one half would
        # have, so that a handful of customers who all did the same cannot pin the rate
        v = 0.25 / nt / q**2 + 0.25 / nc * (1 - rt) ** 2 / q**4
    return float(s), float(v)


def rates_by_export(
    outcomes: pd.DataFrame, priors: dict[str, float], exports: list[str]
) -> list[dict]:
    """Each campaign's own observed save rate per group with its 95% interval, nothing pooled
    or shrunk (how the rates moved from one campaign to the next): ``export, campaign,
    n_treatment, n_control, save_rate_observed, lo, hi``, in the order of ``exports``; groups
    with no observed rate in a campaign are left out."""
    found = []
    for export in exports:
        mine = outcomes[outcomes["export"] == export]
        for row in save_rates(mine, priors).to_dict(orient="records"):
            s, se = row["save_rate_observed"], row["save_rate_observed_se"]
            if math.isnan(s):
                continue
            found.append(
                {
                    "export": export,
                    "campaign": row["campaign"],
                    "n_treatment": row["n_treatment"],
                    "n_control": row["n_control"],
                    "save_rate_observed": s,
                    "lo": s - _Z * se,
                    "hi": s + _Z * se,
                }
            )
    return found
