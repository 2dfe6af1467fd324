"""The command API: accepts commands, appends domain events."""
