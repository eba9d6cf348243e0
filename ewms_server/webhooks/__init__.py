"""Webhooks: a workflow's `notify_url`, the durable outbox of its events, their signed delivery."""
