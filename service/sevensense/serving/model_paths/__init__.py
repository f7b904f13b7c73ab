"""Which model service answers a chunk: GPU first, then CPU, behind breakers and the
fallback chain."""
