"""What each ``churn_predictions`` column means: the descriptions of its column schema in the UI."""

PREDICTION_COLUMN_DESCRIPTIONS = {
    "loyalty_number": "Member number; one row per member enrolled on the week's scoring drop.",
    "week": "Monday of the scoring week (YYYY-MM-DD), the partition key.",
    "snapshot_month": "Last complete month the features describe; nothing after it is used.",
    "churn_risk_pct": "Calibrated probability (0-100 %) that the member cancels within the churn model's "
    "label horizon (default 3 months) after snapshot_month.",
    "risk_tier": "Low, Medium, High or Critical: the churn champion's capacity cut-offs (60th, 85th and 95th "
    "percentiles of its validation scores).",
    "segment": "Road Warriors, Loyal Regulars or Dabblers, from the segmentation champion.",
    "recommended_action": "Action for the member's segment and tier, from the versioned rule table "
    "data/recommended_actions.csv; 'Hold out: no intervention' for the experiment's control arm.",
    "top_reasons": "High and Critical members only: up to 3 features that raise the member's risk most, in plain "
    "language with the member's value against the usual one (the reference population's median), e.g. 'flights "
    "in the last 3 months: 0, below the usual 4'; separated by '; ', empty for the other tiers.",
    "top_reason_features": "The feature names of top_reasons in the same order, comma-separated (machine-readable).",
    "churn_model_version": "Registry version of the churn champion that scored the row.",
    "segmentation_model_version": "Registry version of the segmentation champion that assigned the segment.",
    "experiment_id": "Retention experiment of the week: one per calendar quarter, retention-YYYYQn.",
    "experiment_arm": "treatment, or control for a hashed hold-out that gets no intervention.",
    "assigned_action": "The action of the member's cell, also for hold-outs (what the experiment measures).",
    "control_share": "Hold-out share of the member's cell; the member is control when its hash is below it.",
    "risk_vs_average": "churn_risk_pct divided by the week's mean risk: 2.0 is twice the average member's risk.",
    "risk_percentile": "0-100: the share of the week's members whose risk is at or below this member's.",
}
