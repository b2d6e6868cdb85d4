"""Deployment: smoke test and rollback decisions."""
