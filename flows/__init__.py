"""Prefect flows: they only compose tasks from ``emotalker.tasks``."""
