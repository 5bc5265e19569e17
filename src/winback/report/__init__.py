"""The retention report: figures computed from the orders (:mod:`winback.report.kpis`) and the
page that shows them (:mod:`winback.report.page`)."""

from winback.report.kpis import (
    PERIODS,
    Period,
    active_window_days,
    cohort_table,
    horizon_churn,
    overall_repeat_rate,
    period_bounds,
    report_end,
    retention_by,
    retention_kpis,
    retention_tables,
)
from winback.report.page import (
    kpi_sections,
    p_value,
    plot_cohorts,
    plot_horizon_churn,
    plot_list_sizes,
    plot_retention,
    plot_retention_by,
    plot_score_distribution,
    readout_section,
    readout_tables,
)

__all__ = [
    "PERIODS",
    "Period",
    "report_end",
    "period_bounds",
    "active_window_days",
    "retention_kpis",
    "retention_tables",
    "horizon_churn",
    "overall_repeat_rate",
    "cohort_table",
    "retention_by",
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
]
