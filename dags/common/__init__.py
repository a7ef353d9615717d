"""Shared pieces of the mlopsctl DAGs: the compute backend (compute.py) and the Params (params.py)."""
