"""Projectors: the event log into MongoDB read models and Redis counters; the expiry projector."""
