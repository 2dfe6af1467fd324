"""Creating tables while other processes create them: which errors are retried (commands.catalogue_race)."""

import psycopg.errors
import pytest
from eventsourcing.persistence import IntegrityError, InternalError, ProgrammingError

from commands import catalogue_race
from commands.catalogue_race import create_racing, lost_the_race


def raised_from(error: Exception, cause: Exception) -> Exception:
    """As eventsourcing's PostgreSQL datastore raises it: ``raise ProgrammingError(str(e)) from e``."""
    error.__cause__ = cause
    return error


ALREADY_EXISTS = raised_from(ProgrammingError("exists"), psycopg.errors.DuplicateTable("relation exists"))
TYPE_EXISTS = raised_from(ProgrammingError("exists"), psycopg.errors.DuplicateObject("type exists"))
SYNTAX = raised_from(ProgrammingError("syntax"), psycopg.errors.SyntaxError("syntax error"))


class Creator:
    """A create that raises ``error`` on its first ``failures`` calls, then succeeds."""

    def __init__(self, error: Exception, failures: int) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "recorder"


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(catalogue_race.time, "sleep", lambda seconds: None)


@pytest.mark.parametrize(
    "error", [IntegrityError("pg_type key"), InternalError("tuple concurrently updated"), ALREADY_EXISTS, TYPE_EXISTS]
)
def test_a_lost_race_is_retried_until_the_tables_are_there(error):
    create = Creator(error, failures=2)
    assert lost_the_race(error)
    assert create_racing(create) == "recorder"
    assert create.calls == 3


def test_any_other_programming_error_is_raised_at_once():
    create = Creator(SYNTAX, failures=99)
    assert not lost_the_race(SYNTAX)
    assert not lost_the_race(ProgrammingError("no cause"))
    with pytest.raises(ProgrammingError, match="syntax"):
        create_racing(create)
    assert create.calls == 1


def test_a_race_lost_every_time_gives_up_after_the_attempts():
    create = Creator(ALREADY_EXISTS, failures=99)
    with pytest.raises(ProgrammingError):
        create_racing(create, attempts=4)
    assert create.calls == 4
