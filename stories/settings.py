"""Every setting, from ``STORIES_*`` environment variables, read once when a process starts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.platform import Platform

DEFAULT_COMMAND_PORTS = {Platform.VIGNETTE: 8085, Platform.ENTATIVA: 8086}
DEFAULT_QUERY_PORTS = {Platform.VIGNETTE: 8185, Platform.ENTATIVA: 8186}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STORIES_", extra="ignore")

    platform: Platform = Platform.VIGNETTE
    host: str = "127.0.0.1"
    command_port: int | None = Field(default=None, description="8085 (vignette) / 8086 (entativa)")
    query_port: int | None = Field(default=None, description="8185 (vignette) / 8186 (entativa)")
    data_dir: Path = Path(".data")
    event_store_url: str | None = Field(default=None, description="sqlite:///DATA_DIR/events.sqlite3 when unset")
    mongodb_url: str | None = None
    redis_url: str | None = None
    broker_url: str | None = None
    mongodb_database: str = "stories"
    redis_prefix: str = Field(default="stories:", description="prefix of every Redis key (and stream)")

    broker_prefix: str = Field(default="stories", description="stream <prefix>.events / JetStream <PREFIX>")
    broker_max_len: int = Field(
        default=0, description="optional count cap (Redis MAXLEN ~ / JetStream max_msgs); 0 = none, retention is by age"
    )
    broker_retention: timedelta = Field(
        default=timedelta(days=7), description="brokers keep events this long (seconds or ISO 8601, e.g. P7D)"
    )
    relay_batch: int = 500

    expiry_interval_s: float = Field(
        default=5.0, description="expirer sweep interval (it also wakes at the next due time)"
    )

    projector_batch: int = 1000
    projector_partitions: int = Field(default=1, ge=1, description="shares of the log the projection is split into")
    projector_partition: int | None = Field(
        default=None, description="the one share this projector runs (default: all)"
    )
    projector_metrics_port: int | None = Field(default=None, description="serve /metrics from the projector")
    # Each process without an API serves GET /health, /ready and /metrics on a port of its own
    # (stories/supervisor.py, OpsServer). Unset: a process started alone serves nothing; `stories run`
    # serves each on its default (supervisor.OPS_PORTS: 9185-9188 vignette, 9285-9288 entativa).
    projector_port: int | None = Field(
        default=None, description="projector /health /ready /metrics (STORIES_PROJECTOR_METRICS_PORT is an alias)"
    )
    expirer_port: int | None = Field(default=None, description="expirer /health /ready /metrics")
    relay_port: int | None = Field(default=None, description="relay /health /ready /metrics")
    supervisor_port: int | None = Field(
        default=None, description="`stories run`: its /health /ready /metrics (stories_restarts_total)"
    )
    relay_lease_ttl_s: float = Field(
        default=10.0,
        gt=0,
        description="the relay's lease: one relay publishes, others wait; a dead relay's lease lapses after this long",
    )
    min_position_wait_s: float = Field(default=2.0, description="longest wait for X-Stories-Min-Position")

    jwt_secret: str | None = None
    jwt_public_key: str | None = Field(default=None, description="PEM; switches to RS256")
    jwt_audience: str | None = None
    dev_mode: bool = Field(
        default=False, description="without a secret, use the data directory's own dev secret; loopback binds only"
    )

    # Contract limits, enforced by the command side (409 limit_reached).
    limit_live_stories: int = Field(default=100, ge=1, description="live stories per author")
    limit_follows: int = Field(default=7_500, ge=1, description="accounts one user follows")
    limit_close_friends: int = Field(default=1_500, ge=1, description="close friends per user")
    limit_highlight_stories: int = Field(default=100, ge=1, description="stories per highlight")
    limit_highlights: int = Field(default=200, ge=1, description="highlights per user")
    limit_muted: int = Field(default=7_500, ge=1, description="accounts a user mutes")

    # Erasure (commands/personal_data.py; README, "Erasure and the key store").
    master_keys: str | None = Field(
        default=None,
        description="base64 32-byte keys wrapping every person's data key, "
        "comma-separated, newest first (rotate: add one in front, then `stories keys rotate`); "
        "unset: one the key store keeps beside the keys, which protects nothing against a copy",
    )
    pseudonym_key: str | None = Field(
        default=None,
        description="HMAC key of AccountErased's pseudonym, shared with trusted "
        "subscribers (default: derived from the JWT key)",
    )
    encrypt_personal_data: bool = Field(
        default=True, description="seal personal data in new events (off only to measure its cost)"
    )
    erasure_purge_window: timedelta = Field(
        default=timedelta(days=7),
        description="how long the key store keeps an erased "
        "account's id (wrapped) for projectors that lag or restart to purge it",
    )
    erased_tokens_retention: timedelta = Field(
        default=timedelta(days=400), description="how long an erased account's pseudonym is kept to refuse its tokens"
    )

    cursor_secret: str | None = Field(
        default=None, description="HMAC key of page cursors (default: derived from the JWT key)"
    )
    redis_grace: timedelta = Field(
        default=timedelta(hours=1), description="per-story Redis keys expire this long after the story (safety net)"
    )
    redis_wait_replicas: int = Field(
        default=0,
        ge=0,
        description="before a batch counts as applied, wait until this many replicas of every Redis master written acknowledge it (WAIT)",
    )
    simulated_clock: str | None = Field(
        default=None,
        description="dev mode only, for the soak: ORIGIN_ISO,REAL_EPOCH_S,SCALE: every process's clock reads "
        "ORIGIN + (real now - REAL_EPOCH) * SCALE",
    )

    max_body_bytes: int = 64 * 1024
    rate_limit_per_s: float = Field(default=50.0, description="per user, commands; 0 disables")
    rate_limit_burst: int = 100
    group_commit_max: int = 256
    command_workers: int = Field(default=1, ge=1, description="command API processes sharing the port (SO_REUSEPORT)")

    @field_validator("redis_prefix")
    @classmethod
    def _untagged_prefix(cls, value: str) -> str:
        if "{" in value or "}" in value:  # the keys' own hash tags must decide their cluster slots
            raise ValueError("the Redis key prefix must not contain braces")
        return value

    @field_validator(
        "broker_retention", "redis_grace", "erasure_purge_window", "erased_tokens_retention", mode="before"
    )
    @classmethod
    def _duration(cls, value: object) -> object:
        """Durations as ISO 8601 (P7D), seconds (3600), or a number with d/h/m/s (7d, 12h)."""
        if isinstance(value, str):
            text = value.strip().lower()
            units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
            if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
                return timedelta(seconds=float(text[:-1]) * units[text[-1]])
            if text.replace(".", "", 1).isdigit():
                return timedelta(seconds=float(text))
        return value

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if self.command_port is None:
            self.command_port = DEFAULT_COMMAND_PORTS[self.platform]
        if self.query_port is None:
            self.query_port = DEFAULT_QUERY_PORTS[self.platform]
        if self.event_store_url is None:
            self.event_store_url = f"sqlite:///{(self.data_dir / 'events.sqlite3').resolve()}"
        return self


# No built-in secret: dev mode uses one generated per data directory (stories.auth.dev_secret).


def jwt_settings_problem(settings: Settings) -> str | None:
    """Why a process that serves the APIs (or mints tokens) must refuse to start, or None: dev mode
    beyond loopback, an HS256 secret under 32 bytes, an RS256 public key that does not parse, or
    no key at all outside dev mode."""
    from stories.auth import AuthConfigError, dev_bind_problem, load_public_key, secret_problem

    problem = dev_bind_problem(settings)
    if problem:
        return problem
    if settings.jwt_public_key:
        try:
            load_public_key(settings.jwt_public_key)
        except AuthConfigError as e:
            return str(e)
        return None
    if settings.jwt_secret:
        return secret_problem(settings.jwt_secret)
    if settings.dev_mode:
        return None
    return "no STORIES_JWT_SECRET or STORIES_JWT_PUBLIC_KEY set (set STORIES_DEV_MODE=true for local use)"


def cursor_secret(settings: Settings) -> bytes:
    """The key page cursors are signed with: its own setting, else derived from the JWT key (every
    query API process of a deployment shares that, so a cursor works on any of them); in dev mode
    the data directory's own dev secret."""
    from stories.auth import hs256_secret

    key = settings.cursor_secret or settings.jwt_secret or settings.jwt_public_key or hs256_secret(settings)
    return key.encode()


def pseudonym_key(settings: Settings) -> bytes:
    """The key of erased accounts' pseudonyms: its own setting, else derived from the JWT key, as
    every API process of a deployment shares that (both APIs refuse an erased account's tokens)."""
    import hashlib
    import hmac

    if settings.pseudonym_key:
        return settings.pseudonym_key.encode()
    return hmac.new(cursor_secret(settings), b"stories pseudonym key", hashlib.sha256).digest()
