"""`python -m airflow_mlops.serving`: run the model server."""

from __future__ import annotations

import sys

from airflow_mlops.serving.server import main

if __name__ == "__main__":
    sys.exit(main())
