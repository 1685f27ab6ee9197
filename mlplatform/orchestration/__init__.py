"""The Dagster layer: assets, checks, sensors and resources over the core. Nothing below imports it."""
