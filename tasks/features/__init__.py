"""Feature stage: 3DMM coefficients, HuBERT features, k-means tokens and mel windows."""
