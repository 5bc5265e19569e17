"""The churn model's trees compiled to native code, when the optional ``lleaves`` package is
installed (``pip install 'winback[fast]'``): the same raw scores as LightGBM's own predictor
(to about 1e-15), about five times faster on this kind of forest.

The compiled code is cached next to the model file, in ``<model>.trees-<key>.bin``. The key is a
checksum of what the code depends on: the trees' text, the lleaves and llvmlite versions and the
CPU it was compiled for (it uses that CPU's instructions, so a models folder shared between
machines holds one file per kind of CPU). A second checksum, of the cached file itself, is kept
beside it in ``.sha256`` and checked before the file is loaded: a cache that was cut short or
altered is compiled again, never run. Without lleaves, or when compiling fails, scoring uses
LightGBM's predictor and says so.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import lightgbm as lgb
import numpy as np

from winback.atomic import sha256_file

__all__ = ["compile_trees", "CompiledTrees"]

log = logging.getLogger(__name__)


class CompiledTrees:
    """A compiled forest: :meth:`raw` gives the trees' raw scores of a float matrix."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], label: str):
        self._predict, self.label = predict, label

    def raw(self, X: np.ndarray) -> np.ndarray:
        return self._predict(X)


def compile_trees(
    booster: lgb.Booster, n_trees: int, model_file: Path | None = None
) -> CompiledTrees | None:
    """The first ``n_trees`` trees of ``booster`` compiled, cached next to ``model_file``
    (not cached when it is None or its folder cannot be written); None without lleaves or when
    compiling fails (the caller keeps LightGBM's predictor)."""
    try:
        import lleaves
        import llvmlite
        import llvmlite.binding as llvm
    except ImportError:
        return None
    from importlib.metadata import version

    text = booster.model_to_string(num_iteration=n_trees)
    versions = f"lleaves {version('lleaves')}"
    cpu = f"{llvm.get_host_cpu_name()} {llvm.get_host_cpu_features().flatten()}"
    key = hashlib.sha256(
        "\n".join([text, versions, f"llvmlite {llvmlite.__version__}", cpu]).encode()
    ).hexdigest()[:16]
    cache = None if model_file is None else _cache_path(Path(model_file), key)
    try:
        with tempfile.TemporaryDirectory(prefix="winback-trees-") as scratch:
            source = Path(scratch) / "model.txt"
            source.write_text(text)
            model = lleaves.Model(str(source))
            _compile(model, cache)
    except Exception as exc:  # noqa: BLE001 - any failure leaves LightGBM's predictor in charge
        log.warning("Compiling the trees failed (%s); LightGBM's predictor scores instead.", exc)
        return None
    threads = os.cpu_count() or 1

    def predict(X: np.ndarray) -> np.ndarray:
        return model.predict(np.ascontiguousarray(X, dtype=np.float64), n_jobs=threads)

    return CompiledTrees(predict, f"compiled ({versions})")


def _cache_path(model_file: Path, key: str) -> Path | None:
    folder = model_file.parent
    if not os.access(folder, os.W_OK):
        return None
    return folder / f"{model_file.stem}.trees-{key}.bin"


def _compile(model, cache: Path | None) -> None:
    """Load the cached code when its checksum holds; otherwise compile, and cache the code
    under a temporary name renamed into place, its checksum written after it."""
    if cache is None:
        model.compile(raw_score=True)
        return
    sums = cache.with_suffix(".sha256")
    if cache.exists() and sums.exists() and sums.read_text().strip() == sha256_file(cache):
        model.compile(cache=str(cache), raw_score=True)
        log.debug("compiled trees loaded from %s", cache)
        return
    cache.unlink(missing_ok=True)
    sums.unlink(missing_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    try:
        model.compile(cache=str(tmp), raw_score=True)  # compiles, then writes the code there
        digest = sha256_file(tmp)
        os.replace(tmp, cache)
        sums.write_text(digest + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    log.debug("trees compiled to %s", cache)
