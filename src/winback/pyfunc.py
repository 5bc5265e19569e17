"""The churn model as MLflow serves it: a pyfunc whose ``predict`` gives ``p_churn``.

``train`` logs it with the model file and its checksummed metadata as artifacts, winback's own
code (so a fresh environment built from the logged requirements can load it, whether or not
winback is installed there) and winback's dependencies pinned to the versions it was trained
with. Then::

    model = mlflow.pyfunc.load_model("models:/winback-churn@champion")
    model.predict(features)  # a frame with one column, p_churn, one row per customer

where ``features`` has the model's feature columns (the signature and input example logged with
it list them; :func:`winback.snapshots.build_snapshots` computes them).
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd

__all__ = ["ChurnPyfunc"]


class ChurnPyfunc(mlflow.pyfunc.PythonModel):
    """A winback :class:`~winback.model.ChurnModel` behind MLflow's pyfunc interface."""

    def load_context(self, context) -> None:
        from winback.model import load_model

        self.model = load_model(context.artifacts["model"])  # checked against its sha256

    def predict(self, context, model_input, params=None):
        """The probability that each customer places no order within the model's horizon."""
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return pd.DataFrame({"p_churn": self.model.predict_proba(frame)[:, 1]})
