"""mlopsctl: batch ML pipelines on Airflow 3, Spark/Databricks and MLflow, from one CLI."""

__version__ = "0.1.0"
