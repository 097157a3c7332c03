"""The humane library: one package per concern (see docs/reference/layout.md)."""
