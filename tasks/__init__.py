"""Pipeline stages of humane: one module per stage, each a set of plain functions plus `run`."""
