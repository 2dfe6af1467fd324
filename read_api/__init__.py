"""The query API: serves read models, never writes events."""
