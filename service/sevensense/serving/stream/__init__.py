"""WS /stream: the protocol, resumable sessions, the socket, and the stream's BirdNET cross-check."""
