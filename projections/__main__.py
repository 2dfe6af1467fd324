"""``python -m projections``: the projector (same as ``stories projector``; the expirer is
``stories expirer``)."""

from stories.cli import main

if __name__ == "__main__":
    main(["projector"])
