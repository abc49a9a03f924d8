"""Training the Arbitrage router from collected traces (see the training issue)."""
