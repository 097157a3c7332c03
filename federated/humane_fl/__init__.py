"""humane's Flower App: the ClientApp a site's SuperNode runs, the coordinator's ServerApp, and local nodes."""
