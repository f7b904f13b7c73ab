"""HTTP load benchmarks of the service graph (Locust, headless, bounded in time)."""
