"""Prometheus metrics and OpenTelemetry spans of every service in the graph."""
