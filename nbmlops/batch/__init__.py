"""Batch scoring: files of any size scored in chunks, here or on a Dask cluster."""
