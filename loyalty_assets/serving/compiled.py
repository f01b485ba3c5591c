"""The churn champion compiled for one-row inference, checked against scikit-learn before it serves.

scikit-learn's ``predict_proba`` on one row of a 300-tree forest costs milliseconds of Python and
thread-pool overhead per call. Treelite imports the fitted trees (RandomForest, ExtraTrees,
GradientBoosting and HistGradientBoosting, categorical splits included) and predicts in C++ with
float64 thresholds. The champion's other parts keep their fitted parameters:

- ``CalibratedClassifierCV(FrozenEstimator(pipeline))``: the one fitted calibrator maps the trees'
  response as ``_CalibratedClassifier.predict_proba`` does: the decision function (treelite's
  margin) for models that have one (gradient boosting), else the positive-class probability; a
  sigmoid calibrator is applied from its two fitted numbers, any other through ``predict``;
- a ``SimpleImputer`` before the trees fills NaN with its fitted statistics; a ``ColumnTransformer``
  of such imputers, ``OneHotEncoder`` on numeric codes, ``passthrough`` (also as an identity
  ``FunctionTransformer``) and ``drop`` runs as numpy
  from its fitted categories; any other preprocessing step runs through its own ``transform``.

Forests split on float32 values (scikit-learn casts X to float32), so their input is rounded to
float32 first; HistGradientBoosting compares float64, and a category it did not see in fit is
missing for it (made NaN here before treelite). The compiled model serves only when its
largest absolute difference from ``model.predict_proba`` on the check rows is within
``COMPILED_TOLERANCE``; otherwise scikit-learn serves and the reason is reported.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder


# Far below the 0.1-point rounding of churn_risk_pct: a compiled model within it publishes the same
# risk and tier as the batch. float32 inference (about 1e-7) would not pass, on purpose.
COMPILED_TOLERANCE = 1e-9
FLOAT32_TREES = (RandomForestClassifier, ExtraTreesClassifier, GradientBoostingClassifier)
FORESTS = (RandomForestClassifier, ExtraTreesClassifier)
TREE_ENSEMBLES = (*FLOAT32_TREES, HistGradientBoostingClassifier)

Transform = Callable[[np.ndarray], np.ndarray]


def _positive_share(tree) -> np.ndarray:
    """Share of the positive (last) class in every node of a fitted scikit-learn tree."""
    values = tree.value[:, 0, :]
    return values[:, -1] / values.sum(axis=1)


@dataclass(frozen=True)
class ServingModel:
    """The probability function that serves, and how it was chosen.

    ``matrix_probability`` takes the feature matrix in ``feature_columns`` order (float64), the
    one-row path; ``probability`` takes a frame, as ``ChurnScorer`` calls it.
    """

    matrix_probability: Callable[[np.ndarray], np.ndarray]
    feature_columns: tuple[str, ...]
    engine: str  # "treelite" or "scikit-learn"
    max_abs_difference: float | None
    rows_checked: int
    tolerance: float
    compile_seconds: float
    note: str

    def probability(self, rows: pd.DataFrame) -> np.ndarray:
        return self.matrix_probability(rows[list(self.feature_columns)].to_numpy(dtype=np.float64))

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
        if calibrated.method not in ("sigmoid", "isotonic") or len(calibrated.calibrators) != 1:
            raise UnsupportedModel(f"a {calibrated.method} calibration of {len(calibrated.calibrators)} calibrators")
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


def _calibration(calibrator) -> Transform:
    if isinstance(calibrator, _SigmoidCalibration):
        slope, intercept = float(calibrator.a_), float(calibrator.b_)
        return lambda response: expit(-(slope * response + intercept))
    return calibrator.predict


def _nan_imputer(step) -> bool:
    return isinstance(step, SimpleImputer) and not step.add_indicator and np.isnan(step.missing_values)


def _identity(step) -> bool:
    """A ``FunctionTransformer`` without a function: how scikit-learn >= 1.8 stores a ``passthrough`` remainder."""
    return isinstance(step, FunctionTransformer) and step.func is None


def _numeric_one_hot(step) -> bool:
    return (
        isinstance(step, OneHotEncoder)
        and step.drop_idx_ is None
        and not getattr(step, "_infrequent_enabled", False)
        and all(np.issubdtype(categories.dtype, np.number) for categories in step.categories_)
    )


def _one_hot(encoder: OneHotEncoder) -> Transform:
    """Indicator columns per category; NaN is a category when it was seen in fit."""
    categories = [np.asarray(values, dtype=np.float64) for values in encoder.categories_]
    unknown_error = encoder.handle_unknown == "error"

    def transform(matrix: np.ndarray) -> np.ndarray:
        blocks = []
        for column, known in enumerate(categories):
            values = matrix[:, column : column + 1]
            block = (values == known) | (np.isnan(values) & np.isnan(known))
            if unknown_error and not block.any(axis=1).all():
                raise ValueError(f"a category unknown to the one-hot encoder in column {column}")
            blocks.append(block)
        return np.concatenate(blocks, axis=1).astype(np.float64)

    return transform


def _column_transformer(transformer: ColumnTransformer, columns: list[str]) -> Transform:
    """The fitted ``ColumnTransformer`` as column selections of the input matrix and numpy parts."""
    parts: list[tuple[np.ndarray, Transform]] = []
    for name, step, selected in transformer.transformers_:
        positions = np.arange(len(columns))[transformer._transformer_to_input_indices[name]]
        if step == "drop" or positions.size == 0:
            continue
        if step == "passthrough" or _identity(step):
            parts.append((positions, lambda matrix: matrix))
        elif _nan_imputer(step) and len(step.statistics_) == positions.size:
            parts.append((positions, _imputer(step)))
        elif _numeric_one_hot(step) and not step.sparse_output:
            parts.append((positions, _one_hot(step)))
        else:
            raise UnsupportedModel(f"column transformer part {name!r} ({type(step).__name__})")
    if transformer.sparse_output_:
        raise UnsupportedModel("a column transformer with sparse output")

    def transform(matrix: np.ndarray) -> np.ndarray:
        return np.concatenate([part(matrix[:, positions]) for positions, part in parts], axis=1)

    return transform


def _imputer(step: SimpleImputer) -> Transform:
    statistics = np.asarray(step.statistics_, dtype=np.float64)
    return lambda matrix: np.where(np.isnan(matrix), statistics, matrix)


def _step_transform(step, columns: list[str] | None) -> Transform:
    if _nan_imputer(step):
        return _imputer(step)
    if isinstance(step, ColumnTransformer) and columns is not None:
        try:
            return _column_transformer(step, columns)
        except UnsupportedModel:
            pass  # its own transform below
    names = getattr(step, "feature_names_in_", None)
    if names is not None:
        return lambda matrix: np.asarray(step.transform(pd.DataFrame(matrix, columns=names)), dtype=np.float64)
    return lambda matrix: np.asarray(step.transform(matrix), dtype=np.float64)


def _unknown_categories_as_missing(trees) -> Transform:
    """HistGradientBoosting's encoder makes a category unseen in fit missing; treelite would send it
    down the not-in-set branch instead, so the value is made NaN first."""
    preprocessor = getattr(trees, "_preprocessor", None)
    if preprocessor is None:
        return lambda matrix: matrix
    categories = preprocessor.named_transformers_["encoder"].categories_
    columns = np.flatnonzero(trees.is_categorical_)
    # Each categorical column's known values in one row, padded with NaN (equal to nothing, as in np.isin).
    known = np.full((len(columns), max((len(values) for values in categories), default=0)), np.nan)
    for row, values in enumerate(categories):
        known[row, : len(values)] = values

    def transform(matrix: np.ndarray) -> np.ndarray:
        matrix = matrix.copy()
        codes = matrix[:, columns]
        unknown = ~(codes[:, :, None] == known).any(axis=2)
        matrix[:, columns] = np.where(unknown, np.nan, codes)
        return matrix

    return transform


def _preprocessor(steps, feature_columns: list[str]) -> Transform:
    transforms = [_step_transform(step, feature_columns if index == 0 else None) for index, step in enumerate(steps)]

    def transform(matrix: np.ndarray) -> np.ndarray:
        for step in transforms:
            matrix = step(matrix)
        return matrix

    return transform


def compile_churn_model(model, feature_columns: list[str], check_rows: pd.DataFrame | None) -> ServingModel:
    """Treelite for the champion's trees when it matches scikit-learn on ``check_rows``, else scikit-learn."""
    started = time.perf_counter()
    columns = list(feature_columns)

    named = hasattr(model, "feature_names_in_")

    def sklearn_probability(matrix: np.ndarray) -> np.ndarray:
        return model.predict_proba(pd.DataFrame(matrix, columns=columns) if named else matrix)[:, 1]

    def serving(probability, engine, difference, rows, note) -> ServingModel:
        elapsed = time.perf_counter() - started
        return ServingModel(probability, tuple(columns), engine, difference, rows, COMPILED_TOLERANCE, elapsed, note)

    try:
        import treelite

        calibrator, steps, trees = _parts(model)
        with warnings.catch_warnings():
            # treelite casts the encoder's categories to int64, NaN (missing seen in fit) included.
            warnings.filterwarnings("ignore", "invalid value encountered in cast", RuntimeWarning)
            compiled = treelite.sklearn.import_model(trees)
        preprocess = _preprocessor(steps, columns)
    except Exception as error:  # treelite raises its own TreeliteError for trees it cannot import
        return serving(sklearn_probability, "scikit-learn", None, 0, f"not compiled ({type(error).__name__}: {error})")
    float32_input = isinstance(trees, FLOAT32_TREES)
    # _CalibratedClassifier calibrates the decision function when the model has one.
    margin = calibrator is not None and hasattr(trees, "decision_function")
    calibrate = None if calibrator is None else _calibration(calibrator)

    unknown_as_missing = _unknown_categories_as_missing(trees)

    def tree_input(matrix: np.ndarray) -> np.ndarray:
        matrix = unknown_as_missing(preprocess(matrix))
        if float32_input:
            matrix = matrix.astype(np.float32).astype(np.float64)
        return np.ascontiguousarray(matrix)

    def leaves(matrix: np.ndarray) -> np.ndarray:
        return treelite.gtil.predict_leaf(compiled, tree_input(matrix), nthread=1).astype(np.int64)

    def tree_response(matrix: np.ndarray) -> np.ndarray:
        response = treelite.gtil.predict(compiled, tree_input(matrix), nthread=1, pred_margin=margin)
        return response.reshape(len(matrix), -1)[:, -1]

    def calibrated(response: np.ndarray) -> np.ndarray:
        return response if calibrate is None else calibrate(response)

    leaf_probability = None
    if isinstance(trees, FORESTS):
        # A forest's probability is the mean of its leaves' positive shares: treelite's leaf ids cost
        # half its probability prediction.
        offsets = np.cumsum([0] + [estimator.tree_.node_count for estimator in trees.estimators_[:-1]])
        shares = np.concatenate([_positive_share(estimator.tree_) for estimator in trees.estimators_])

        def leaf_probability(leaf_ids: np.ndarray) -> np.ndarray:
            return calibrated(shares[leaf_ids + offsets].sum(axis=1) / len(offsets))

        def compiled_probability(matrix: np.ndarray) -> np.ndarray:
            return leaf_probability(leaves(matrix))
    else:

        def compiled_probability(matrix: np.ndarray) -> np.ndarray:
            return calibrated(tree_response(matrix))

    if check_rows is None or check_rows.empty:
        return serving(sklearn_probability, "scikit-learn", None, 0, "no rows to check the compiled model against")
    check = check_rows[columns].to_numpy(dtype=np.float64)
    difference = float(np.max(np.abs(compiled_probability(check) - sklearn_probability(check))))
    if not difference <= COMPILED_TOLERANCE:
        note = f"compiled model differs from scikit-learn by {difference:.3g} > {COMPILED_TOLERANCE:g}"
        return serving(sklearn_probability, "scikit-learn", difference, len(check), note)
    note = f"treelite {treelite.__version__}, {type(trees).__name__}, checked on {len(check)} rows"
    return serving(compiled_probability, "treelite", difference, len(check), note)
