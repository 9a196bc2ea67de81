"""Core contracts: Target, Dataset, Finding/Report, ATLAS catalogue, executor."""
