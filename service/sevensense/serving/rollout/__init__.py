"""Which version serves: traffic weights, resolution of a model reference, hot swap and canary."""
