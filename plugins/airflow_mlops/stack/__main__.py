"""`python -m airflow_mlops.stack`: manage the local stack and run the demo."""

from __future__ import annotations

from airflow_mlops.stack.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
