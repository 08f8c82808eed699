"""Packaging: a fitted model and its notebook preprocessing become a verified artifact."""
