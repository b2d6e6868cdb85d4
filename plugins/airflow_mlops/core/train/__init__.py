"""Training: window and split, estimators, evaluation and gates, model card."""
