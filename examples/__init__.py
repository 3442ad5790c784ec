"""Runnable examples: a demo upstream, its gateway config and a launcher for both."""
