"""Where the DAGs find things and how they run, from the environment of the Airflow workers.

| variable | meaning | default |
|---|---|---|
| CFREC_WAREHOUSE | default `warehouse` param | /data/cfrec/warehouse |
| CFREC_INPUT_PATH | default `input_path` param ({ds} = run date) | /data/cfrec/input |
| CFREC_JOBS_DIR | folder of the spark-submit jobs | `jobs` beside the DAGs folder |
| CFREC_DAGS_FOLDER | folder of the DAG files | Airflow's `[core] dags_folder`, else ./dags |
| CFREC_TRAIN_POOL / CFREC_TRAIN_QUEUE | pool and queue of the training task | gpu / default |
| CFREC_WRITER_POOL | one-slot pool every warehouse-writing task of every cfrec DAG runs in | cfrec_warehouse |
| CFREC_RETRIES / CFREC_RETRY_DELAY_SECONDS | retries per task and first delay | 2 / 120 |
| CFREC_INPUT_TIMEOUT_HOURS | how long the sensor waits for a night's files | 12 |
| CFREC_NIGHTLY_SCHEDULE / CFREC_WEEKLY_SCHEDULE | schedules (`none`: triggered runs only) | @daily / 0 6 * * 0 |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cfmodel.errors import CfrecError

NIGHTLY_DAG_FILE = "cfrec_nightly.py"


def dags_folder() -> Path:
    """The folder holding cfrec's DAG files: $CFREC_DAGS_FOLDER, else Airflow's `dags_folder` when
    set in the environment, else ./dags when it holds them. Needs no Airflow import, so local runs
    can configure Airflow with it before Airflow loads."""
    explicit = os.environ.get("CFREC_DAGS_FOLDER") or os.environ.get("AIRFLOW__CORE__DAGS_FOLDER")
    if explicit:
        return Path(explicit).expanduser().resolve()
    here = Path("dags").resolve()
    if (here / NIGHTLY_DAG_FILE).is_file():
        return here
    raise CfrecError("set CFREC_DAGS_FOLDER to the folder holding cfrec's DAG files (the repository's dags/)")


def _airflow_dags_folder() -> Path:
    """On an Airflow worker: the DAGs folder Airflow parses (jobs/ is deployed beside it)."""
    from airflow.configuration import conf

    return Path(conf.get("core", "dags_folder")).expanduser().resolve()


@dataclass(frozen=True)
class Settings:
    warehouse: str
    input_path: str
    jobs_dir: Path
    train_pool: str
    writer_pool: str
    train_queue: str
    retries: int
    retry_delay_seconds: float
    input_timeout_hours: float
    nightly_schedule: str | None
    weekly_schedule: str | None

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        jobs = env("CFREC_JOBS_DIR")
        return cls(
            warehouse=env("CFREC_WAREHOUSE", "/data/cfrec/warehouse"),
            input_path=env("CFREC_INPUT_PATH", "/data/cfrec/input"),
            jobs_dir=Path(jobs).expanduser().resolve() if jobs else _airflow_dags_folder().parent / "jobs",
            train_pool=env("CFREC_TRAIN_POOL", "gpu"),
            writer_pool=env("CFREC_WRITER_POOL", "cfrec_warehouse"),
            train_queue=env("CFREC_TRAIN_QUEUE", "default"),
            retries=int(env("CFREC_RETRIES", "2")),
            retry_delay_seconds=float(env("CFREC_RETRY_DELAY_SECONDS", "120")),
            input_timeout_hours=float(env("CFREC_INPUT_TIMEOUT_HOURS", "12")),
            nightly_schedule=_schedule(env("CFREC_NIGHTLY_SCHEDULE", "@daily")),
            weekly_schedule=_schedule(env("CFREC_WEEKLY_SCHEDULE", "0 6 * * 0")),
        )


def _schedule(value: str) -> str | None:
    return None if value.strip().lower() in ("", "none") else value


def settings() -> Settings:
    """The settings as the environment holds them now (read at every DAG parse)."""
    return Settings.from_env()


def pools(env: Settings) -> list[tuple[str, int, str]]:
    """The Airflow pools cfrec's DAGs run in: name, slots, description. The writer pool has one
    slot so the nightly and weekly DAGs queue for the warehouse instead of failing on its lock (the
    lock still guards writers outside Airflow); training runs outside it and takes the lock only to
    save its model."""
    return [
        (env.train_pool, 1, "cfrec model training (one GPU)"),
        (env.writer_pool, 1, "cfrec steps that write the warehouse (one at a time)"),
    ]
