"""Datasets and their schemas, reading sources, and Great Expectations validation."""
