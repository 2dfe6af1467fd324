"""``python -m read_api``: the query API alone (same as ``stories query-api``)."""

from stories.cli import main

if __name__ == "__main__":
    main(["query-api"])
