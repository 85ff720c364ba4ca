"""Dagster wiring: Definitions, resources, sensors, schedules, automation."""
