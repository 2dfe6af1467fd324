"""The write side: command models, the event store and the application service."""
