"""analytics: DuckDB SQL over the dataset, the metrics, the dashboard, the catalog."""

# The feature an experiment's uses are compared on unless one is named (the planted
# eco_nudge experiment's): one value for `metrics experiment`, `--experiment KEY`, the
# report and the dashboard.
DEFAULT_FEATURE = "eco_mode"

# The funnel the dashboard shows, and the funnel metric's steps unless others are given:
# the one compaction rolls up (rollups.sql, funnel_days); other steps are computed from
# the events.
DEFAULT_FUNNEL = ("power_on", "session_start", "feature_used")
