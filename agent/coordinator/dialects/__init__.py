"""The API dialects other than chat completions, as pure translations onto the one internal request
(agent/wire/chat_body.py) and from the flow's events (agent/coordinator/flow.py): Responses, Messages, legacy
completions. The HTTP endpoints around them are agent/coordinator/http/dialect_routes.py."""
