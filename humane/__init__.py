"""The humane library: one package per concern (see README, "Layout")."""
