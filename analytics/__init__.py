"""analytics: DuckDB SQL over the dataset, the metrics, the dashboard, the catalog."""

# The feature an experiment's uses are compared on unless one is named (the planted
# eco_nudge experiment's): one value for `metrics experiment`, `--experiment KEY`, the
# report and the dashboard.
DEFAULT_FEATURE = "eco_mode"
