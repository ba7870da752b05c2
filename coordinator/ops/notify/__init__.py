"""Notifications: an outbox queued in the rerouting transaction, delivered by a task."""
