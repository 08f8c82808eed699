"""Monitoring: the prediction log, drift against the reference profile, and the monitor report."""
