"""The relay: the event log to a message broker, at least once, in log order."""
