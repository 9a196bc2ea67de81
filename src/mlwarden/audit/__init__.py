"""Audit plans: a YAML plan of checks run as jobs on core's executor, one report."""
