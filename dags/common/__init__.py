"""Shared pieces of the mlopsctl DAGs: the compute backend (compute.py), the pipeline registry (pipelines.json) and
the Params (params.json, wrapped in Airflow Params by params.py)."""
