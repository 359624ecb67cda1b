"""Prefect flows that wire the pipeline's tasks together, and the ``fpgaflow`` command."""

from fpgaflow.flows.prefect_defaults import apply_prefect_defaults

apply_prefect_defaults()
