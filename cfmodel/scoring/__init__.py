"""Scoring: every user's top-N, similar items and new users, all through one masked top-k."""
