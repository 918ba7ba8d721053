"""Ingest: raw rating files -> clean Parquet increments, current tables, rejects, id indices, a report;
and the data-quality gate on the result."""
