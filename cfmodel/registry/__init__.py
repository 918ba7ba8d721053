"""The model registry: versioned artifacts, `CURRENT`, run records and the promotion gate."""
