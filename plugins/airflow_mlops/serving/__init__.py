"""The model server: serves the `champion` of every configured pipeline over HTTP (see server.py)."""
