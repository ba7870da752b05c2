"""Breakwater edge agent: local breakers from MQTT sensors, on the warehouse gateway."""
