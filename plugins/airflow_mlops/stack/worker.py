"""The host name a Celery worker of the distributed stack gives Airflow: its own loopback address."""

from __future__ import annotations

import os

ENV_HOSTNAME = "MLOPS_WORKER_HOSTNAME"


def hostname() -> str:
    """`[core] hostname_callable` of the stack's workers: Airflow records it on each task instance and the
    API server fetches the task's log from http://<it>:<worker_log_server_port>/log/..., where only this
    worker's log server answers. Elsewhere Airflow's own choice (the machine's FQDN)."""
    name = os.environ.get(ENV_HOSTNAME)
    if name:
        return name
    from airflow.utils.net import getfqdn

    return str(getfqdn())
