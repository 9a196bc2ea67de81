"""mlwarden: find and fix the security weaknesses of machine-learning systems."""

__version__ = "0.1.0"
