"""Simulators: brokers for tests and demos, sensor and order streams, incident replays."""
