"""The churn champion compiled for one-row inference, checked against scikit-learn before it serves.

scikit-learn's ``predict_proba`` on one row of a 300-tree forest costs milliseconds of Python and
thread-pool overhead per call. Treelite imports the fitted trees (RandomForest, ExtraTrees,
GradientBoosting and HistGradientBoosting, categorical splits included) and predicts in C++ with
float64 thresholds. The champion's other parts keep their fitted parameters:

- ``CalibratedClassifierCV(FrozenEstimator(pipeline))``: the one fitted calibrator maps the trees'
  positive-class probability, exactly as ``_CalibratedClassifier.predict_proba`` does;
- a ``SimpleImputer`` before the trees fills NaN with its fitted statistics; any other
  preprocessing step runs through its own scikit-learn ``transform``.

Forests split on float32 values (scikit-learn casts X to float32), so their input is rounded to
float32 first; HistGradientBoosting compares float64. The compiled model serves only when its
largest absolute difference from ``model.predict_proba`` on the check rows is within
``COMPILED_TOLERANCE``; otherwise scikit-learn serves and the reason is reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline

# Far below the 0.1-point rounding of churn_risk_pct: a compiled model within it publishes the same
# risk and tier as the batch. float32 inference (about 1e-7) would not pass, on purpose.
COMPILED_TOLERANCE = 1e-9
FLOAT32_TREES = (RandomForestClassifier, ExtraTreesClassifier, GradientBoostingClassifier)
TREE_ENSEMBLES = (*FLOAT32_TREES, HistGradientBoostingClassifier)


@dataclass(frozen=True)
class ServingModel:
    """The probability function that serves, and how it was chosen."""

    probability: Callable[[pd.DataFrame], np.ndarray]
    engine: str  # "treelite" or "scikit-learn"
    max_abs_difference: float | None
    rows_checked: int
    tolerance: float
    compile_seconds: float
    note: str

    def describe(self) -> dict:
        return {
            "engine": self.engine,
            "compiled_max_abs_difference": self.max_abs_difference,
            "rows_checked": self.rows_checked,
            "tolerance": self.tolerance,
            "compile_seconds": round(self.compile_seconds, 3),
            "note": self.note,
        }


class UnsupportedModel(ValueError):
    """The champion has a part the compiler does not know."""


def _parts(model):
    """(calibrator or None, preprocessing steps, tree ensemble) of the champion."""
    calibrator = None
    inner = model
    if isinstance(inner, CalibratedClassifierCV):
        if len(inner.calibrated_classifiers_) != 1:
            raise UnsupportedModel(f"{len(inner.calibrated_classifiers_)} cross-validated calibrations, expected one")
        calibrated = inner.calibrated_classifiers_[0]
        if len(calibrated.calibrators) != 1:
            raise UnsupportedModel("a calibration with more than one calibrator (not a binary model)")
        calibrator = calibrated.calibrators[0]
        inner = calibrated.estimator
    if isinstance(inner, FrozenEstimator):
        inner = inner.estimator
    steps = list(inner.steps) if isinstance(inner, Pipeline) else [("model", inner)]
    trees = steps[-1][1]
    if not isinstance(trees, TREE_ENSEMBLES):
        raise UnsupportedModel(f"{type(trees).__name__} is not a tree ensemble treelite imports")
    if len(trees.classes_) != 2:
        raise UnsupportedModel(f"classes {list(trees.classes_)}: expected a binary model")
    return calibrator, [step for _, step in steps[:-1]], trees


def _preprocessor(steps) -> Callable[[np.ndarray], np.ndarray]:
    def transform(matrix: np.ndarray) -> np.ndarray:
        for step in steps:
            if isinstance(step, SimpleImputer) and not step.add_indicator and np.isnan(step.missing_values):
                matrix = np.where(np.isnan(matrix), step.statistics_, matrix)
            else:
                matrix = np.asarray(step.transform(matrix), dtype=np.float64)
        return matrix

    return transform


def compile_churn_model(model, feature_columns: list[str], check_rows: pd.DataFrame | None) -> ServingModel:
    """Treelite for the champion's trees when it matches scikit-learn on ``check_rows``, else scikit-learn."""
    started = time.perf_counter()

    def sklearn_probability(rows: pd.DataFrame) -> np.ndarray:
        return model.predict_proba(rows)[:, 1]

    def fallback(note: str, difference: float | None = None, rows: int = 0) -> ServingModel:
        elapsed = time.perf_counter() - started
        return ServingModel(sklearn_probability, "scikit-learn", difference, rows, COMPILED_TOLERANCE, elapsed, note)

    try:
        import treelite

        calibrator, steps, trees = _parts(model)
        compiled = treelite.sklearn.import_model(trees)
    except Exception as error:  # treelite raises its own TreeliteError for trees it cannot import
        return fallback(f"not compiled ({type(error).__name__}: {error}); scikit-learn serves")
    preprocess = _preprocessor(steps)
    float32_input = isinstance(trees, FLOAT32_TREES)
    columns = list(feature_columns)

    def compiled_probability(rows: pd.DataFrame) -> np.ndarray:
        matrix = preprocess(rows[columns].to_numpy(dtype=np.float64))
        if float32_input:
            matrix = matrix.astype(np.float32).astype(np.float64)
        positive = treelite.gtil.predict(compiled, np.ascontiguousarray(matrix), nthread=1)
        positive = positive.reshape(len(matrix), -1)[:, -1]
        return positive if calibrator is None else calibrator.predict(positive)

    if check_rows is None or check_rows.empty:
        return fallback("no rows to check the compiled model against; scikit-learn serves")
    expected = sklearn_probability(check_rows[columns])
    difference = float(np.max(np.abs(compiled_probability(check_rows) - expected)))
    if not difference <= COMPILED_TOLERANCE:
        return fallback(
            f"compiled model differs from scikit-learn by {difference:.3g} > {COMPILED_TOLERANCE:g}; "
            "scikit-learn serves",
            difference,
            len(check_rows),
        )
    return ServingModel(
        compiled_probability,
        "treelite",
        difference,
        len(check_rows),
        COMPILED_TOLERANCE,
        time.perf_counter() - started,
        f"treelite {treelite.__version__}, checked on {len(check_rows)} rows",
    )
