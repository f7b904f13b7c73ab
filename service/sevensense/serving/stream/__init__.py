"""WS /stream: the protocol, resumable sessions, the socket, the stream's BirdNET
cross-check, and the route the wiring mounts."""
