"""The code a logged model runs, shipped with it (MLflow code_paths): numpy, pandas and scikit-learn only."""
