"""Monitoring the champion on production batches: drift, estimated and realised performance, group gaps.

Plain functions over frames; the MLflow and Prefect edges are `champion.py` and flows/monitoring.py.
"""
