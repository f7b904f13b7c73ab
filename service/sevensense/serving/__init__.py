"""The HTTP service: BentoML gateway and model services, auth, rate limits, rollouts."""
