"""Breakwater coordinator: order allocation, breaker-driven rerouting, notifications."""
