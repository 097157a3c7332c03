"""Promotion gate, tracking, registry, serving model, model card and lineage."""
