"""Weekly model monitoring: drift checks on the scoring assets and an HTML report beside the predictions."""
