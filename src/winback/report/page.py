"""The retention report's page: its plots and its sections (the figures of
:mod:`winback.report.kpis`, the lists of the exports and the campaign readouts)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from winback.html import Section, figure_tag, table_tag

__all__ = [
    "plot_retention",
    "plot_horizon_churn",
    "plot_cohorts",
    "plot_retention_by",
    "plot_score_distribution",
    "plot_list_sizes",
    "readout_section",
    "readout_tables",
    "p_value",
    "kpi_sections",
    "plot_learned_save_rates",
    "plot_qini_curves",
    "plot_profit_curves",
    "learned_section",
]


def _ax(size: tuple[float, float], ax=None):
    from winback.plots import new_ax

    return ax or new_ax(size)


def plot_retention(kpis: pd.DataFrame, ax=None):
    """Retention, repeat purchase and revenue retention rates over the periods."""
    ax = _ax((8, 4), ax)
    x = np.arange(len(kpis))
    for col, label in (
        ("retention_rate", "customer retention (E - N) / S"),
        ("repeat_purchase_rate", "repeat purchase rate"),
        ("revenue_retention", "revenue retention"),
    ):
        ax.plot(x, kpis[col].astype(float), marker="o", ms=3, lw=1.5, label=label)
    step = max(1, len(kpis) // 12)
    ax.set_xticks(x[::step], kpis["period"].iloc[::step], rotation=45, ha="right")
    ax.yaxis.set_major_formatter(_percent())
    ax.set(title="Retention over time", ylabel="rate")
    ax.legend(loc="best", fontsize=8)
    return ax


def plot_horizon_churn(frame: pd.DataFrame, horizon_days: int, ax=None):
    """Churn within the horizon at each period start, with the customers it is out of."""
    ax = _ax((8, 3.6), ax)
    x = np.arange(len(frame))
    ax.plot(x, frame["churn_rate"].astype(float), marker="o", ms=3, lw=1.5, color="#c2410c")
    step = max(1, len(frame) // 12)
    ax.set_xticks(x[::step], frame["period"].iloc[::step], rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(_percent())
    ax.set(
        title=f"Active customers who bought nothing in the next {horizon_days} days",
        ylabel="churn rate",
    )
    return ax


def _percent():
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0, decimals=0)


def plot_cohorts(cohorts: pd.DataFrame, max_cohorts: int = 24, max_months: int = 24, ax=None):
    """Heatmap of the latest cohorts: share buying again k months after the first purchase;
    blank where the cohort is too young."""
    grid = cohorts.drop(columns="customers").iloc[-max_cohorts:, :max_months]
    ax = _ax((9, 0.28 * len(grid) + 1.8), ax)
    values = np.ma.masked_invalid(grid.to_numpy(dtype=float))
    im = ax.imshow(values, aspect="auto", cmap="Blues", vmin=0, interpolation="nearest")
    ax.set_xticks(np.arange(grid.shape[1]), grid.columns, fontsize=7)
    ax.set_yticks(np.arange(grid.shape[0]), grid.index, fontsize=7)
    if grid.shape[0] * grid.shape[1] <= 24 * 24:
        for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=5.5,
                        color="white" if v > values.max() * 0.6 else "#1f2933")  # fmt: skip
    ax.set(
        xlabel="months after the first purchase",
        ylabel="cohort (month of the first purchase)",
        title="Share of each cohort buying again",
    )
    ax.figure.colorbar(im, ax=ax, format=_percent(), shrink=0.8)
    return ax


def plot_retention_by(frame: pd.DataFrame, by: str, ax=None):
    """Churn rate per group in the latest period, largest losses first."""
    last = frame[frame["period"] == frame["period"].iloc[-1]].sort_values("churn_rate")
    ax = _ax((7, 0.32 * len(last) + 1.6), ax)
    ax.barh(last[by].astype(str), last["churn_rate"], color="#c2410c")
    for i, (rate, s) in enumerate(zip(last["churn_rate"], last["S"], strict=True)):
        ax.text(rate, i, f" {rate:.0%} of {s:,}", va="center", fontsize=7)
    ax.xaxis.set_major_formatter(_percent())
    ax.set(
        title=f"Churn by {by} in {last['period'].iloc[-1]}",
        xlabel="churn rate (active at the start, not at the end)",
    )
    return ax


def plot_score_distribution(scores: pd.DataFrame, ax=None):
    """Histogram of the latest churn probabilities, one per list."""
    ax = _ax((7, 3.8), ax)
    bins = np.linspace(0, 1, 41)
    for name, part in scores.groupby("list", sort=True):
        ax.hist(
            part["p_churn"].astype(float),
            bins=bins,
            alpha=0.6,
            label=f"{name}: {len(part):,} scored",
        )
    ax.set(xlabel="predicted churn probability", ylabel="customers scored", title="Latest scores")
    ax.legend(loc="upper left", fontsize=8)
    return ax


def plot_list_sizes(history: pd.DataFrame, ax=None):
    """Customers on each exported list over time."""
    ax = _ax((7, 3.5), ax)
    for col in [c for c in history.columns if c.startswith("listed_")]:
        ax.plot(pd.to_datetime(history["as_of"]), history[col], marker="o", ms=3,
                label=f"{col.removeprefix('listed_')}: listed")  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.set(ylabel="customers listed (contact + control)", title="List size per export")
    ax.legend(loc="best", fontsize=8)
    ax.figure.autofmt_xdate()
    return ax


_KPI_SHOWN = [
    "period", "S", "E", "N", "retained", "reactivated", "retention_rate", "churn_rate",
    "buyers", "repeat_purchase_rate", "revenue", "revenue_retention",
]  # fmt: skip
_RATES = (
    "retention_rate",
    "churn_rate",
    "strict_retention_rate",
    "repeat_purchase_rate",
    "revenue_retention",
    "revenue_churn",
    "retention_treatment",
    "retention_control",
    "incremental_retention",
    "incremental_retention_lo",
    "incremental_retention_hi",
    "min_detectable_uplift",
)


def readout_section(readout, section_id: str = "campaign") -> Section:
    """The HTML section of a campaign readout (see :mod:`winback.measure`)."""
    from winback.measure import plot_readout

    t = readout.table
    sec = Section(section_id, f"Campaign readout: export of {readout.as_of:%Y-%m-%d}")
    end = readout.as_of + timedelta(days=readout.window_days)
    sec.text(
        f"Listed customers of {readout.export}, outcome window {readout.as_of:%Y-%m-%d} to "
        f"{end:%Y-%m-%d} ({readout.window_days} days; {readout.observed_days:.0f} observed). "
        "Treatment was contacted, control was held out at random; the difference is the effect "
        "of the campaign (95% intervals, normal approximation)."
    )
    for w in readout.warnings:
        sec.text(w, "warning")
    if len(t):
        all_row = t.iloc[0]
        if pd.notna(all_row["incremental_retention"]):
            a = all_row
            n_tests = int(t["incremental_retention_p"].notna().sum())
            sec.text(
                f"Overall: {a['retention_treatment']:.1%} of treated customers bought again "
                f"against {a['retention_control']:.1%} of the control, an uplift of "
                f"{a['incremental_retention'] * 100:+.1f} points "
                f"[{a['incremental_retention_lo'] * 100:+.1f}, "
                f"{a['incremental_retention_hi'] * 100:+.1f}], p "
                f"{_p_said(a['incremental_retention_p'])} "
                f"({p_value(a['incremental_retention_p_adjusted'])} adjusted for {n_tests} "
                f"comparisons); incremental revenue {a['incremental_revenue']:,.0f} "
                f"[{a['incremental_revenue_lo']:,.0f}, {a['incremental_revenue_hi']:,.0f}] for a "
                f"cost of {a['cost']:,.0f}: net {a['net_revenue']:,.0f} "
                f"[{a['net_revenue_lo']:,.0f}, {a['net_revenue_hi']:,.0f}]."
            )
        sec.add(figure_tag(plot_readout(t), "treatment against control"))
        bought, money = readout_tables(t)
        sec.add(table_tag(bought))
        sec.add(table_tag(money))
    return sec


def _p_said(p: float) -> str:
    text = p_value(p)
    return text if text.startswith("<") else f"= {text}"


def p_value(p: float) -> str:
    """A p-value as people read it: three decimals, or ``< 0.001``."""
    if pd.isna(p):
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _with_interval(v, lo, hi, fmt: str) -> str:
    if pd.isna(v):
        return ""
    return f"{v:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def readout_tables(t: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A readout's table (:func:`winback.measure.measure_campaign`) as two tables narrow enough
    to read on a laptop screen: who bought again (uplift in points with its interval and
    p-values) and the money (incremental and net revenue with their intervals, and the cost).
    Every figure is in the readout's CSV too."""
    pt = (t[["incremental_retention", "incremental_retention_lo", "incremental_retention_hi"]]
          * 100)  # fmt: skip
    bought = pd.DataFrame(
        {
            "scope": t["scope"],
            "treated": t["n_treatment"],
            "control": t["n_control"],
            "bought again, treated": [_pct(v) for v in t["retention_treatment"]],
            "bought again, control": [_pct(v) for v in t["retention_control"]],
            "uplift, points [95% CI]": [
                _with_interval(*row, "+.1f") for row in pt.itertuples(index=False)
            ],
            "p": [p_value(v) for v in t["incremental_retention_p"]],
            "p (Holm)": [p_value(v) for v in t["incremental_retention_p_adjusted"]],
        }
    )
    money = pd.DataFrame(
        {
            "scope": t["scope"],
            "revenue per treated": t["revenue_per_customer_treatment"].astype(float),
            "revenue per control": t["revenue_per_customer_control"].astype(float),
            "incremental revenue [95% CI]": [
                _with_interval(*row, ",.0f")
                for row in t[
                    ["incremental_revenue", "incremental_revenue_lo", "incremental_revenue_hi"]
                ].itertuples(index=False)
            ],
            "cost": t["cost"].astype(float),
            "net revenue [95% CI]": [
                _with_interval(*row, ",.0f")
                for row in t[["net_revenue", "net_revenue_lo", "net_revenue_hi"]].itertuples(
                    index=False
                )
            ],
        }
    )
    return bought, money


def _pct(v) -> str:
    return "" if pd.isna(v) else f"{v:.1%}"


def kpi_sections(
    kpis: pd.DataFrame,
    cohorts: pd.DataFrame,
    by: dict[str, pd.DataFrame],
    repeat: tuple[int, int, float],
    window_days: int,
    horizon: pd.DataFrame | None = None,
    horizon_days: int | None = None,
) -> list[Section]:
    """Sections of the churn over the model's horizon (``horizon``, from :func:`horizon_churn`),
    the retention KPIs, the cohorts and the losses by segment and channel."""
    out = []
    if horizon is not None and horizon_days:
        sec = Section("horizon", f"Churn over the model's horizon ({horizon_days} days)")
        sec.text(
            f"What the model predicts and the lists score: of the customers with a purchase in "
            f"the {window_days} days before the start of each period, the share who bought "
            f"nothing in the {horizon_days} days after it. Shown for the periods whose "
            f"{horizon_days} days have passed."
        )
        if len(horizon):
            sec.add(figure_tag(plot_horizon_churn(horizon, horizon_days), "churn over horizon"))
            sec.add(table_tag(horizon, percent=("churn_rate",)))
        else:
            sec.text(f"No period has {horizon_days} days of orders after its start yet.", "note")
        out.append(sec)
    sec = Section("retention", "Retention by period")
    n, rep, rate = repeat
    sec.text(
        f"Active = at least one purchase in the {window_days} days before the instant. "
        "S = active at the start of the period, E = active at its end, N = new (first purchase "
        "in the period); retention = (E - N) / S, churn = 1 - retention: a customer churns here "
        f"only when a whole {window_days} days pass without a purchase, so over one period it is "
        "low"
        + (f"; churn as the model sees it is above ({horizon_days} days)" if horizon_days else "")
        + ". 'reactivated' are customers not active at the start who came back. Revenue "
        "retention = net revenue in the period from the customers active at its start / theirs "
        "in the previous period. "
        f"Overall repeat purchase rate: {rep:,} of {n:,} customers bought twice or more "
        f"({rate:.1%})."
    )
    if len(kpis):
        sec.add(figure_tag(plot_retention(kpis), "retention over time"))
        sec.add(table_tag(kpis[_KPI_SHOWN], percent=_RATES))
    else:
        sec.text("No complete period yet.", "note")
    out.append(sec)

    sec = Section("cohorts", "Cohorts")
    sec.text(
        "Share of each cohort (month of the first purchase) that bought in each later month; "
        "blank where the month is not over yet. The table shows the first 12 months of the "
        "latest 24 cohorts; the heatmap goes to 24 months and cohorts.csv holds every one."
    )
    if len(cohorts):
        sec.add(figure_tag(plot_cohorts(cohorts), "cohort heatmap"))
        shown = cohorts.iloc[-24:, : 1 + 12].reset_index()
        sec.add(table_tag(shown, percent=tuple(shown.columns[2:])))
    out.append(sec)

    sec = Section("losses", "Who we lose: churn by segment and channel")
    sec.text(
        "Customers active at the start of each period, grouped by their RFM segment at that "
        f"moment and by the channel of their last purchase; churned = not active at the end "
        f"(no purchase in the {window_days} days before it). "
        "Latest complete period shown; every period is in the CSV files."
    )
    for name, frame in by.items():
        if frame.empty:
            sec.text(f"No {name} in the orders: map a {name} column to split by it.", "note")
            continue
        sec.add(figure_tag(plot_retention_by(frame, name), f"churn by {name}"))
        last = frame[frame["period"] == frame["period"].iloc[-1]]
        sec.add(table_tag(last.sort_values("churn_rate", ascending=False), percent=_RATES))
    out.append(sec)
    return out


_RANKING_LABELS = {"model": "uplift model", "p_churn": "riskiest first (p_churn)"}


def plot_learned_save_rates(doc: dict, ax=None):
    """Each group's save rate as each campaign measured it (95% interval), and the rate
    learned from all of them (dashed; its interval shaded)."""
    ax = _ax((8, 4), ax)
    by_export = pd.DataFrame(doc.get("by_export") or [])
    dates = {e["export"]: e["as_of"] for e in doc.get("exports", [])}
    colors = {}
    for i, (name, part) in enumerate(by_export.groupby("campaign", sort=False)):
        x = pd.to_datetime(part["export"].map(dates).fillna(part["export"]))
        x = x + pd.to_timedelta(i, unit="D")  # groups side by side, not on top of each other
        y = part["save_rate_observed"].to_numpy(dtype=float)
        err = [y - part["lo"].to_numpy(dtype=float), part["hi"].to_numpy(dtype=float) - y]
        line = ax.errorbar(x, y, yerr=err, fmt="o", ms=4, capsize=3, label=name)
        colors[name] = line[0].get_color()
    for name, g in doc.get("groups", {}).items():
        if name in colors and g.get("weight"):
            ax.axhline(g["save_rate"], color=colors[name], ls="--", lw=1)
            ax.axhspan(g["save_rate_lo"], g["save_rate_hi"], color=colors[name], alpha=0.08)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(ylabel="save rate", title="Save rate per campaign, and learned (dashed)")
    ax.legend(loc="best", fontsize=8)
    ax.figure.autofmt_xdate()
    return ax


def plot_qini_curves(curves: dict, ax=None):
    """The Qini curve of each ranking on the campaign it was judged on, and random targeting's
    line."""
    ax = _by_ranking(curves, "incremental", "incremental buyers per customer",
                     "Qini curves, out of time", ax)  # fmt: skip
    last = next(iter(curves.values()))["incremental"][-1] if curves else 0.0
    ax.plot([0, 1], [0, last], color="grey", ls=":", label="at random")
    ax.legend(loc="best", fontsize=8)
    return ax


def plot_profit_curves(curves: dict, ax=None):
    """Net incremental profit per listed customer had the top share been contacted, under each
    ranking, on the campaign it was judged on."""
    ax = _by_ranking(curves, "net", "net incremental profit per customer",
                     "Profit under each ranking, out of time", ax)  # fmt: skip
    ax.axhline(0, color="grey", lw=0.8)
    ax.legend(loc="best", fontsize=8)
    return ax


def _by_ranking(curves: dict, column: str, ylabel: str, title: str, ax=None):
    """One line per ranking of learned.json's curves: ``column`` against the share taken."""
    ax = _ax((7, 4), ax)
    for name, c in curves.items():
        ax.plot(c["share"], c[column], label=_RANKING_LABELS.get(name, name))
    ax.set(xlabel="share of the customers contacted, best first", ylabel=ylabel, title=title)
    return ax


def learned_section(doc: dict | None, source: str) -> Section:
    """The report's "What we learned" section from learned.json (``doc``, read from
    ``source``): save rates per group over the campaigns, and the uplift model's judgement
    with its Qini and profit curves; or how to get there."""
    sec = Section("learned", "What we learned from past campaigns")
    if doc is None:
        sec.text(
            f"{source}. Run 'winback learn --exports DIR --out learned.json' once campaigns' "
            "outcome windows have passed, and set campaigns.learned to it.",
            "note",
        )
        return sec
    used = doc.get("exports", [])
    sec.text(
        f"From {len(used)} campaign(s) whose outcome window had passed, learned on "
        f"{str(doc.get('learned_at', '?'))[:10]} ({source}). A save rate is the share of the "
        "control's would-be churners that a contact kept; each campaign's own is shown with its "
        "95% interval, and the learned rate pools them, shrunk towards the configured one when "
        "few customers were held out."
    )
    rows = [
        {
            "group": name,
            "campaigns": g["n_campaigns"],
            "held out": g["n_control"],
            "assumed": g["prior"],
            "observed": g["save_rate_observed"],
            "learned": g["save_rate"],
            "95% interval": f"[{g['save_rate_lo']:.3f}, {g['save_rate_hi']:.3f}]",
        }
        for name, g in doc.get("groups", {}).items()
    ]
    if doc.get("by_export"):
        sec.add(figure_tag(plot_learned_save_rates(doc), "save rates per campaign and learned"))
    if rows:
        sec.add(table_tag(pd.DataFrame(rows), digits=3))
    up = doc.get("uplift") or {}
    if not up.get("evaluated"):
        sec.text(f"Uplift model: not judged ({up.get('why', 'nothing to judge')}).", "note")
        return sec
    q = up["rankings"]["model"]
    p = up["rankings"].get("p_churn", {}).get("qini")
    sec.text(
        f"Uplift model: trained on {', '.join(up['trained_on'])}, judged on "
        f"{up['evaluated_on']}, which it did not see. Qini coefficient {q['qini']:.4f} "
        f"[{q['qini_lo']:.4f}, {q['qini_hi']:.4f}]"
        + (f" against {p:.4f} for the riskiest first" if p is not None else "")
        + f"; buying rate of the treated less the held out among its top 10%: "
        f"{q['uplift_10'] * 100:+.1f} points. "
        + (
            "It beat p_churn: lists are ranked by it where campaigns.rank_by allows."
            if up.get("beats_p_churn")
            else f"Lists stay ranked by p_churn: {up.get('why')}."
        )
    )
    if up.get("qini_curves"):
        sec.add(figure_tag(plot_qini_curves(up["qini_curves"]), "Qini curves"))
    if up.get("profit_curves"):
        sec.add(figure_tag(plot_profit_curves(up["profit_curves"]), "profit under each ranking"))
    return sec
