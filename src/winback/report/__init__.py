"""The retention report: figures computed from the orders (:mod:`winback.report.kpis`) and the
page that shows them (:mod:`winback.report.page`)."""

from winback.report import kpis, page
from winback.report.kpis import *  # noqa: F403
from winback.report.page import *  # noqa: F403

__all__ = [*kpis.__all__, *page.__all__]
