"""Building the SparkSession the same way for spark-submit, the CLI and tests."""

from __future__ import annotations

import os
import sys

LOCAL_DEFAULTS = {
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    # Small tables on a laptop or CI box: 200 shuffle partitions would mostly be scheduling overhead.
    "spark.sql.shuffle.partitions": "8",
    "spark.driver.memory": "4g",
}


def launched_by_spark_submit() -> bool:
    # spark-submit starts the Python driver with a gateway to its already running JVM; the master,
    # memory and every --conf then come from spark-submit and must not be overridden here.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(app_name: str = "cfrec"):
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if not launched_by_spark_submit():
        # Local Python workers must run the interpreter that has cfmodel and its dependencies.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.master(os.environ.get("CFREC_SPARK_MASTER", "local[*]"))
        for key, value in LOCAL_DEFAULTS.items():
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("CFREC_SPARK_LOG_LEVEL", "WARN"))
    return spark
