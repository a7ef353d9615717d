"""Airflow 3 REST API v2 client. Never prints; raises mlopsctl.errors exceptions."""
