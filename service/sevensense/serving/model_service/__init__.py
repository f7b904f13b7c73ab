"""What a model service is without BentoML: the gateway-to-model contract and the batch host."""
