"""Streaming scoring: a consumer group on a broker's stream, at least once, output once."""
