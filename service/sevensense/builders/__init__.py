"""Build-time generators for model artifacts the platform cannot download."""
