"""Where requests go: the provider registry, placement, pending sends, pre-warming and wait queues."""
