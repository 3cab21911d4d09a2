"""fleetpulse: device telemetry from MQTT to Parquet to product metrics.

This package root holds what every subsystem shares: the command-line root
(`fleetpulse.cli`), flag and environment defaults (`fleetpulse.config`) and the one error
type shown to people (`fleetpulse.errors`). Each subsystem is a subpackage mapped from
its own top-level folder (see pyproject.toml).
"""
