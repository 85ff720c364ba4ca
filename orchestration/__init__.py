"""Dagster wiring: Definitions, resources, sensors, schedules, automation."""

from socialrec.quiet import quiet

quiet()  # first, in every process that runs the graph (socialrec.quiet lists what and why)
