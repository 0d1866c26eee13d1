"""The coordinator's edges: the consumer HTTP API, the agents' websocket, the process."""
