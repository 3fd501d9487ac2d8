"""Shipped forecasting configs (YAML) and their generator, :mod:`.generate`."""
