"""``python -m write_api``: the command API alone (same as ``stories command-api``)."""

from stories.cli import main

if __name__ == "__main__":
    main(["command-api"])
