"""API schema fuzzing: schemathesis against the running command and query APIs."""
