"""Serving: the prediction service, its HTTP app, batcher and protocols, and its client handle."""
