"""The Dask executor's tests: one package, so the shared cluster ends with its last test."""
