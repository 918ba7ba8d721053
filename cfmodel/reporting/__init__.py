"""Reporting: the analytics tables beside the recommendations, model interpretation, plots."""
