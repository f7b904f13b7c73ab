"""Clients of the service's own protocols (the reference WS /stream client)."""
