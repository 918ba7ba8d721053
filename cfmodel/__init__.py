"""cfrec: nightly collaborative-filtering recommendations on Spark, PyTorch and Parquet."""

__version__ = "0.1.0"
