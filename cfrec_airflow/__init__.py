"""Airflow glue for cfrec: the DAGs' task builders, failure alerts, local runs and the demo.

The library (`cfmodel`) never imports this package; it reaches the `cfrec` command line through
the `cfrec.commands` entry point."""
