"""The whole pipeline: params.yaml composed of every concern's sections, stage entry points, experiment workspaces."""
