"""Training runs: strategies, the fit loop, callbacks."""
