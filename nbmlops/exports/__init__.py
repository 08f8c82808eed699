"""Exports of a registered version: an ONNX twin with proven parity."""
