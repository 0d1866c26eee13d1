"""The wire contract: the frames agent and coordinator exchange, and the consumer's request body. Pure."""
