"""`python -m airflow_mlops`: the package's command line (see cli.py)."""

from airflow_mlops.cli import main

raise SystemExit(main())
