"""MLflow tracking and registry: runs, lineage, promotion and audit, model loading."""
