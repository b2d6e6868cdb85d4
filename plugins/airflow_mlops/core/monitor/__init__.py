"""Monitoring: drift, quality on matured labels, the retrain decision and its report."""
