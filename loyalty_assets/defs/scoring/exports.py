"""Stable lake keys of the weekly files that people and other systems pick up."""


def predictions_export_key(week: str, suffix: str) -> str:
    """``exports/churn_predictions/week=YYYY-MM-DD/churn_predictions.<suffix>`` (csv or parquet)."""
    return f"exports/churn_predictions/week={week}/churn_predictions.{suffix}"
