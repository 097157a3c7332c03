"""Features, the network, the training loop and its evaluation."""
