"""The partner HTTP API: the app, its routes, the front door and the h11 server's guard."""
