"""Ingest: landing files, validation with Great Expectations, features."""
