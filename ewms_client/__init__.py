"""EWMS user client: library (`EWMSClient`, `queues`) and the `ewms` CLI."""
