"""Shared pieces of the benchmarks: result rows, processes, ports, tokens, load generators.

Every load loop here is bounded twice: by a duration and by a hard subprocess timeout (or a
request count). Nothing asserts on timing; the benchmarks only report.

Run as a module for the helper processes the benchmarks start:

    python -m bench.common ceiling-server --port P    # bare aiohttp JSON endpoint (uvloop)
    python -m bench.common loadgen --url U ...        # the asyncio fallback load generator
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from projections.redis_schema import VIEW_NAME

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
PYTHON = sys.executable


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- result rows ----------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table.

    ``baseline`` is what ``value`` is compared against (the ceiling, or the fresh-story figure);
    ``ratio`` is value / baseline unless given; ``goal`` is ``(">=", 0.5)`` or ``("<=", 1.1)``
    on the ratio (or on the value when there is no baseline).
    """

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None
    goal: tuple[str, float] | None = None
    note: str = ""
    goal_on_value: bool = False  # judge the goal on ``value`` even when there is a baseline

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline:
            self.ratio = self.value / self.baseline

    def goal_met(self) -> bool | None:
        if self.goal is None:
            return None
        subject = self.value if self.goal_on_value or self.ratio is None else self.ratio
        if subject is None or subject != subject:  # NaN
            return False
        op, target = self.goal
        return subject >= target if op == ">=" else subject <= target

    def cells(self) -> list[str]:
        met = self.goal_met()
        goal = ""
        if self.goal is not None:
            goal = (
                f"{'≥' if self.goal[0] == '>=' else '≤'} {self.goal[1]:g}{' ' + self.unit if self.goal_on_value else ''} "
                + ("✓ met" if met else "✗ missed")
            )
        baseline = ""
        if self.baseline is not None:
            baseline = fmt(self.baseline) + (f" ({self.baseline_name})" if self.baseline_name else "")
        return [
            self.name,
            fmt(self.value),
            self.unit,
            baseline,
            "" if self.ratio is None else f"{self.ratio:.3f}",
            goal,
        ]


COLUMNS = ["name", "value", "unit", "ceiling/baseline", "ratio", "goal"]


def fmt(x: float) -> str:
    if x != x:
        return "n/a"
    if x == int(x) and abs(x) < 1000:
        return str(int(x))
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


# -- processes and ports --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process in its own process group, stopped by its pid (never by name)."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = OUT_DIR / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115  # the child writes to it until stop() closes it
        self.proc = subprocess.Popen(
            list(argv), env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_http(self, port: int, path: str = "/health", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; see {self.log_path}:\n{self.tail()}"
                )
            try:
                status, _ = http_request("GET", port, path, timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {path} on port {port} within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)  # aiohttp's run_app shuts down cleanly on SIGINT
                self.proc.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def http_request(
    method: str, port: int, path: str, body: Any = None, token: str | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """One request on a fresh connection (set-up and checks; not for measuring)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def scrape_metrics(port: int) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text page (``name value`` lines)."""
    status, body = http_request("GET", port, "/metrics")
    out: dict[str, float] = {}
    if status != 200:
        return out
    for line in body.decode().splitlines():
        if line.startswith("#") or "{" in line:
            continue
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                out[parts[0]] = float(parts[1])
    return out


class CpuMeter:
    """CPU used by one process (all threads) and by the whole machine between start() and stop()."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid

    @staticmethod
    def _proc(pid: int | None) -> float:
        if pid is None:
            return 0.0
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    @staticmethod
    def _system() -> list[int]:
        try:
            return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except OSError:
            return []

    def start(self) -> CpuMeter:
        self._t0, self._p0, self._s0 = time.perf_counter(), self._proc(self.pid), self._system()
        return self

    def stop(self) -> CpuMeter:
        elapsed = time.perf_counter() - self._t0
        self.process_cores = (self._proc(self.pid) - self._p0) / elapsed if elapsed else float("nan")
        s1 = self._system()
        deltas = [b - a for a, b in zip(self._s0, s1)]
        total = sum(deltas)
        idle = deltas[3] + deltas[4] if len(deltas) > 4 else 0  # idle + iowait
        self.machine_busy = (total - idle) / total if total else float("nan")
        return self


class ProcessTreeCpu:
    """CPU used by a process and all its descendants, by name (each one's command line, shortened),
    between start() and stop(): where a whole stack's cores go (servers it did not start, such as
    the machine's PostgreSQL, count only in ``machine_busy``)."""

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid

    def _tree(self) -> dict[int, tuple[str, float]]:
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        wanted, frontier = {self.root_pid}, [self.root_pid]
        while frontier:
            pid = frontier.pop()
            children = [child for child, parent in parents.items() if parent == pid and child not in wanted]
            wanted.update(children)
            frontier.extend(children)
        out = {}
        for pid in wanted:
            try:
                argv = ([*Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\x00"), b""])[:4]
            except OSError:
                continue
            words = [
                Path(a.decode(errors="replace")).name
                for a in argv  # no options, addresses, ports
                if a and not a.startswith(b"-") and b":" not in a and not a.isdigit()
            ]
            name = " ".join(w for w in words if w not in ("python", "python3", "python3.11"))[:40] or str(pid)
            out[pid] = (name, CpuMeter._proc(pid))
        return out

    def start(self) -> ProcessTreeCpu:
        self._t0, self._before, self._machine = time.perf_counter(), self._tree(), CpuMeter().start()
        return self

    def stop(self) -> ProcessTreeCpu:
        elapsed = time.perf_counter() - self._t0
        after = self._tree()
        self.machine_busy = self._machine.stop().machine_busy
        self.cores: dict[str, float] = {}
        for pid, (name, cpu) in after.items():
            used = cpu - self._before.get(pid, (name, 0.0))[1]
            self.cores[name] = self.cores.get(name, 0.0) + used / elapsed
        return self

    def summary(self) -> str:
        top = sorted(self.cores.items(), key=lambda item: -item[1])
        return (
            ", ".join(f"{name} {cores:.2f}" for name, cores in top if cores >= 0.01)
            + f" cores; machine {self.machine_busy:.0%} busy"
        )


# -- tokens -------------------------------------------------------------------------------


def mint_tokens(secret: str, users: Sequence[str], ttl_s: int = 3 * 3600) -> list[str]:
    import jwt

    now = int(time.time())
    return [jwt.encode({"sub": u, "iat": now, "exp": now + ttl_s}, secret, algorithm="HS256") for u in users]


# -- percentiles ----------------------------------------------------------------------------


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


# -- load generation ------------------------------------------------------------------------


@dataclass
class LoadSpec:
    """Requests rotate over ``requests``: (path, bearer token or None[, JSON body]), in order."""

    port: int
    requests: list[tuple[str, str | None] | tuple[str, str | None, dict]]
    method: str = "POST"
    duration_s: float = 10.0
    connections: int = 64
    threads: int = 1


@dataclass
class LoadResult:
    generator: str
    requests: int
    duration_s: float
    non_2xx: int
    socket_errors: int
    latency_p50_ms: float
    latency_p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok_rps(self) -> float:
        return (self.requests - self.non_2xx) / self.duration_s if self.duration_s else 0.0


WRK_SCRIPT = r"""
-- Rotates pre-formatted requests over a file of "PATH TOKEN [JSON-BODY]" lines ("-" = no
-- token; the body has no spaces); prints a JSON summary at the end.
local reqs = {}
local n = 0
local i = 0

function init(args)
  local method, pairfile, offset = args[1], args[2], tonumber(args[3] or "0")
  for line in io.lines(pairfile) do
    local path, tok, body = line:match("^(%S+)%s+(%S+)%s*(%S*)$")
    local headers = {["Content-Length"] = tostring(#body)}
    if #body > 0 then headers["Content-Type"] = "application/json" else body = nil end
    if tok ~= "-" then headers["Authorization"] = "Bearer " .. tok end
    reqs[#reqs + 1] = wrk.format(method, path, headers, body)
  end
  n = #reqs
  i = offset % n
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "status": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_path() -> str | None:
    if os.environ.get("BENCH_LOADGEN", "").lower() == "python":
        return None
    return shutil.which("wrk")


def generator_name() -> str:
    return "wrk" if wrk_path() else "python-asyncio"


def _request_line(path: str, token: str | None, body: dict | None = None) -> str:
    compact = json.dumps(body, separators=(",", ":")) if body is not None else ""
    if " " in compact:
        raise ValueError("a load body must have no spaces")
    return f"{path} {token or '-'} {compact}".rstrip() + "\n"


def run_load(spec: LoadSpec, tag: str) -> LoadResult:
    """Run one bounded load phase with wrk, or with the asyncio fallback when wrk is missing."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    pairfile = OUT_DIR / f"{tag}.requests"
    pairfile.write_text("".join(_request_line(*request) for request in spec.requests))
    wrk = wrk_path()
    if wrk:
        script = OUT_DIR / "rotate.lua"
        script.write_text(WRK_SCRIPT)
        argv = [
            wrk,
            f"-t{spec.threads}",
            f"-c{spec.connections}",
            f"-d{round(spec.duration_s)}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            f"http://127.0.0.1:{spec.port}",
            "--",
            spec.method,
            str(pairfile),
            "0",
        ]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=spec.duration_s + 60)
        (OUT_DIR / f"{tag}.wrk.txt").write_text(out.stdout + out.stderr)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk gave no summary (rc={out.returncode}):\n{out.stdout}\n{out.stderr}")
        data = json.loads(line[len("WRK_JSON ") :])
        return LoadResult(
            generator="wrk",
            requests=data["requests"],
            duration_s=data["duration_us"] / 1e6,
            non_2xx=data["status"],
            socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
            latency_p50_ms=data["p50_us"] / 1000,
            latency_p99_ms=data["p99_us"] / 1000,
        )
    argv = [
        PYTHON,
        "-m",
        "bench.common",
        "loadgen",
        "--port",
        str(spec.port),
        "--method",
        spec.method,
        "--requests",
        str(pairfile),
        "--duration",
        str(spec.duration_s),
        "--connections",
        str(spec.connections),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=spec.duration_s + 60, cwd=ROOT)
    (OUT_DIR / f"{tag}.loadgen.txt").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed (rc={out.returncode}):\n{out.stderr[-2000:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return LoadResult(generator="python-asyncio", **data)


# -- embedded servers and the whole stack ----------------------------------------------------

SECRET = "bench-secret-not-for-production-use-0123456789"
STORIES_BIN = Path(PYTHON).parent / "stories"


class EmbeddedBackends:
    """SecantusDB + Valkey (the embedded defaults) with data under ``data_dir``; stopped on exit."""

    def __init__(self, data_dir: Path) -> None:
        from stories.embedded import start_secantus, start_valkey

        data_dir.mkdir(parents=True, exist_ok=True)
        self.mongo = start_secantus(data_dir)
        try:
            self.redis = start_valkey(data_dir)
        except Exception:
            self.mongo.stop()
            raise
        self.mongo_url, self.redis_url = self.mongo.url, self.redis.url

    def close(self) -> None:
        self.redis.stop()
        self.mongo.stop()

    def __enter__(self) -> EmbeddedBackends:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def stories_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORIES_")}
    env.update(
        STORIES_DATA_DIR=str(data_dir),
        STORIES_JWT_SECRET=SECRET,
        STORIES_RATE_LIMIT_PER_S="0",
        STORIES_HOST="127.0.0.1",
        STORIES_PLATFORM="vignette",
    )
    env.update(extra)
    return env


PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class FreshPostgres:
    """A PostgreSQL database of its own for one benchmark phase (dropped on exit): the production
    event store beside the embedded SQLite one. ``url`` is an event store URL."""

    def __init__(self, tag: str) -> None:
        import psycopg

        self.name = f"stories_bench_{tag}_{os.getpid()}_{int(time.time())}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        admin = PG_ADMIN_URL.rsplit("/", 1)[0]
        self.url = f"{admin}/{self.name}"

    def close(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def __enter__(self) -> FreshPostgres:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Stack:
    """``stories run`` (every process: command API, query API, projector, expirer, relay, and the
    embedded SecantusDB + Valkey) on free ports with its data in ``data_dir``."""

    def __init__(self, data_dir: Path, name: str = "stories-run", **extra: str) -> None:
        self.data_dir = data_dir
        self.command_port, self.query_port = free_port(), free_port()
        env = stories_env(
            data_dir, STORIES_COMMAND_PORT=str(self.command_port), STORIES_QUERY_PORT=str(self.query_port), **extra
        )
        self.process = Process(name, [str(STORIES_BIN), "run"], env=env)
        try:
            self.process.wait_http(self.command_port, timeout=90)
            self.process.wait_http(self.query_port, "/ready", timeout=90)
            state = json.loads((data_dir / "embedded.json").read_text())
            self.mongo_url, self.redis_url = state["mongodb"]["url"], state["redis"]["url"]
        except Exception:
            self.process.stop(timeout=20)
            raise
        self.event_store_url = (
            extra.get("STORIES_EVENT_STORE_URL") or f"sqlite:///{(data_dir / 'events.sqlite3').resolve()}"
        )

    def stop(self) -> None:
        self.process.stop(timeout=30)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class PositionReader:
    """Reads the log head (SQLite) and both read models' recorded positions directly: what the
    query API serves at is min(mongo, redis)."""

    def __init__(
        self, event_store_url: str, mongo_url: str, redis_url: str, database: str = "stories", prefix: str = "stories:"
    ) -> None:
        import redis
        from pymongo import MongoClient

        from commands.event_store import EventStore

        self.store = EventStore(event_store_url)
        self.mongo = MongoClient(mongo_url)
        self.positions = self.mongo[database]["projection_positions"]
        self.redis = redis.Redis.from_url(redis_url)
        self.redis_key = f"{prefix}position:{VIEW_NAME}"

    def read(self) -> tuple[int, int, int]:
        head = self.store.head()
        doc = self.positions.find_one({"_id": "mongo_views"})
        return head, (doc or {}).get("position", 0), int(self.redis.get(self.redis_key) or 0)

    def wait_caught_up(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            head, m, r = self.read()
            if min(m, r) >= head:
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        self.store.close()
        self.mongo.close()
        self.redis.close()


class LagSampler:
    """Samples (t, head, mongo, redis) every ``interval_s`` in a thread, for at most ``limit_s``."""

    def __init__(self, reader: PositionReader, interval_s: float = 0.05, limit_s: float = 600.0) -> None:
        import threading

        self.reader, self.interval_s, self.limit_s = reader, interval_s, limit_s
        self.samples: list[tuple[float, int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-sampler", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        next_at = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                head, m, r = self.reader.read()
                self.samples.append((time.monotonic(), head, m, r))
            except Exception as error:  # a sample lost is reported, not fatal
                log(f"lag sample failed: {error}")
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> LagSampler:
        self._thread.start()
        return self

    def stop(self) -> LagSampler:
        self._stop.set()
        self._thread.join(timeout=10)
        return self

    def lag(self, t0: float = float("-inf"), t1: float = float("inf")) -> dict[str, float]:
        """Lag over the samples taken in [t0, t1]:

        * events: head - min(mongo, redis) at each sample;
        * seconds: at each sample, how long ago the oldest event the read models have not applied
          was appended (0 when caught up). The append time of position p is taken as the first
          sample whose head reached p, so it is accurate to one sampling interval.
        """
        samples = self.samples
        events, seconds = [], []
        first_seen: list[tuple[int, float]] = []  # (head, t) where head grew
        for t, head, _m, _r in samples:
            if not first_seen or head > first_seen[-1][0]:
                first_seen.append((head, t))
        import bisect

        heads = [h for h, _ in first_seen]
        for t, head, m, r in samples:
            if not t0 <= t <= t1:
                continue
            applied = min(m, r)
            events.append(max(0, head - applied))
            if applied >= head:
                seconds.append(0.0)
            else:
                k = bisect.bisect_left(heads, applied + 1)  # first sample whose head covered applied + 1
                seconds.append(max(0.0, t - first_seen[k][1]) if k < len(first_seen) else 0.0)
        return {
            "samples": len(events),
            "events_p50": percentile(events, 50),
            "events_p99": percentile(events, 99),
            "events_max": max(events) if events else float("nan"),
            "s_p50": percentile(seconds, 50),
            "s_p99": percentile(seconds, 99),
            "s_max": max(seconds) if seconds else float("nan"),
        }


# -- open-loop (paced) load: a steady offered rate ---------------------------------------------


@dataclass
class PacedResult:
    offered_rps: float
    sent: int
    duration_s: float
    ok: int
    statuses: dict[str, int]
    errors: int
    late: int
    latency_p50_ms: float
    latency_p99_ms: float
    answers: list[tuple[float, int]]  # (monotonic time answered, position) of each 2xx with a position

    @property
    def ok_rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0


def run_paced(
    port: int,
    requests: list[tuple[str, str, str, str | None]],
    rate: float,
    duration_s: float,
    tag: str,
    max_in_flight: int = 256,
) -> PacedResult:
    """Offer ``rate`` requests/s for ``duration_s`` (open loop: sends on schedule, not on answers;
    at most ``max_in_flight`` outstanding, a send that finds none free is counted ``late`` and waits).
    ``requests``: (method, path, token, json body or None), used in order, wrapping around.
    Runs in its own process (``python -m bench.common paced``), so it does not share our GIL."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    reqfile = OUT_DIR / f"{tag}.paced.jsonl"
    with open(reqfile, "w") as f:
        for method, path, token, body in requests:
            f.write(json.dumps([method, path, token, body]) + "\n")
    outfile = OUT_DIR / f"{tag}.paced.out.json"
    argv = [
        PYTHON,
        "-m",
        "bench.common",
        "paced",
        "--port",
        str(port),
        "--requests",
        str(reqfile),
        "--rate",
        str(rate),
        "--duration",
        str(duration_s),
        "--max-in-flight",
        str(max_in_flight),
        "--out",
        str(outfile),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 90, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"paced load failed (rc={out.returncode}):\n{out.stderr[-2000:]}")
    data = json.loads(outfile.read_text())
    data["answers"] = [tuple(a) for a in data["answers"]]
    return PacedResult(**data)


async def _paced(port: int, requests: list[list], rate: float, duration: float, max_in_flight: int) -> dict:
    import aiohttp

    base = f"http://127.0.0.1:{port}"
    prepared = []
    for method, path, token, body in requests:
        headers = {"Authorization": f"Bearer {token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        prepared.append((method, base + path, headers, data))
    latencies: list[float] = []
    answers: list[tuple[float, int]] = []
    statuses: dict[str, int] = {}
    counts = {"errors": 0, "late": 0, "ok": 0}
    slots = asyncio.Semaphore(max_in_flight)
    connector = aiohttp.TCPConnector(limit=max_in_flight)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def one(method: str, url: str, headers: dict, data: bytes | None) -> None:
            t0 = time.monotonic()
            try:
                async with session.request(method, url, headers=headers, data=data) as response:
                    await response.read()
                    t1 = time.monotonic()
                    key = str(response.status)
                    statuses[key] = statuses.get(key, 0) + 1
                    if 200 <= response.status < 300:
                        counts["ok"] += 1
                        latencies.append(t1 - t0)
                        position = response.headers.get("X-Stories-Position")
                        if position and position.isdigit():
                            answers.append((t1, int(position)))
            except (TimeoutError, aiohttp.ClientError):
                counts["errors"] += 1
            finally:
                slots.release()

        tasks = set()
        started = time.monotonic()
        n = int(rate * duration)
        for i in range(n):
            due = started + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if slots.locked():
                counts["late"] += 1
            await slots.acquire()
            task = asyncio.create_task(one(*prepared[i % len(prepared)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent_by = time.monotonic()
        if tasks:
            await asyncio.wait(tasks, timeout=15)
    return {
        "offered_rps": rate,
        "sent": n,
        "duration_s": max(sent_by - started, 1e-9),
        "ok": counts["ok"],
        "statuses": statuses,
        "errors": counts["errors"],
        "late": counts["late"],
        "latency_p50_ms": percentile(latencies, 50) * 1000,
        "latency_p99_ms": percentile(latencies, 99) * 1000,
        "answers": answers,
    }


def sequential_get(
    port: int, path: str, token: str | None, count: int, warmup: int = 10, limit_s: float = 120.0
) -> tuple[list[float], dict[int, int], int]:
    """``count`` GETs one after another on one keep-alive connection: (latencies s, statuses, bytes of the last)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    size = 0
    deadline = time.monotonic() + limit_s
    try:
        for i in range(warmup + count):
            if time.monotonic() > deadline:
                log(f"sequential GET {path}: time limit after {len(latencies)} requests")
                break
            t0 = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            dt = time.perf_counter() - t0
            statuses[response.status] = statuses.get(response.status, 0) + 1
            size = len(body)
            if i >= warmup:
                latencies.append(dt)
    finally:
        conn.close()
    return latencies, statuses, size


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


# -- helper processes -----------------------------------------------------------------------


def _install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass


def serve_ceiling(port: int) -> None:
    """The ceiling: a bare aiohttp app answering ``{"ok": true}`` to POST, served like the real one."""
    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=b'{"ok": true}', content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status": "ok"}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/{tail:.*}", ok)
    app.router.add_get("/health", health)
    _install_uvloop()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=lambda *_: None)


async def _loadgen(port: int, method: str, pairs: list[tuple[str, str]], duration: float, connections: int) -> dict:
    import aiohttp

    latencies: list[float] = []
    counts = {"requests": 0, "non_2xx": 0, "socket_errors": 0}
    base = f"http://127.0.0.1:{port}"
    requests = []
    for path, t, *body in pairs:
        headers = {"Authorization": f"Bearer {t}"} if t != "-" else {}
        if body and body[0]:
            headers["Content-Type"] = "application/json"
        requests.append((base + path, headers, body[0].encode() if body and body[0] else None))
    started = time.perf_counter()
    deadline = started + duration
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def worker(w: int) -> None:
            i = w
            while time.perf_counter() < deadline:
                url, headers, data = requests[i % len(requests)]
                i += connections
                t0 = time.perf_counter()
                try:
                    async with session.request(method, url, headers=headers, data=data) as response:
                        await response.read()
                        if not 200 <= response.status < 400:
                            counts["non_2xx"] += 1
                except (TimeoutError, aiohttp.ClientError):
                    counts["socket_errors"] += 1
                    continue
                counts["requests"] += 1
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker(w) for w in range(connections)))
    elapsed = time.perf_counter() - started
    return {
        "requests": counts["requests"],
        "duration_s": elapsed,
        "non_2xx": counts["non_2xx"],
        "socket_errors": counts["socket_errors"],
        "latency_p50_ms": percentile(latencies, 50) * 1000,
        "latency_p99_ms": percentile(latencies, 99) * 1000,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.common")
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("ceiling-server")
    c.add_argument("--port", type=int, required=True)
    g = sub.add_parser("loadgen")
    g.add_argument("--port", type=int, required=True)
    g.add_argument("--method", default="POST")
    g.add_argument("--requests", required=True, help='file of "PATH TOKEN" lines')
    g.add_argument("--duration", type=float, default=10.0)
    g.add_argument("--connections", type=int, default=64)
    p = sub.add_parser("paced")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--requests", required=True, help="JSON lines [method, path, token, body]")
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--max-in-flight", type=int, default=256)
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "paced":
        requests = [json.loads(line) for line in Path(args.requests).read_text().splitlines() if line.strip()]
        _install_uvloop()
        result = asyncio.run(_paced(args.port, requests, args.rate, min(args.duration, 300.0), args.max_in_flight))
        Path(args.out).write_text(json.dumps(result))
    elif args.cmd == "ceiling-server":
        serve_ceiling(args.port)
    else:
        pairs = [tuple(line.split()) for line in Path(args.requests).read_text().splitlines() if line.strip()]
        _install_uvloop()
        result = asyncio.run(_loadgen(args.port, args.method, pairs, min(args.duration, 120.0), args.connections))
        print(json.dumps(result))


if __name__ == "__main__":
    main()


def seeding_application(data_dir: Path) -> tuple[Any, Any, Any]:
    """(event store, group committer, application service) on a fresh SQLite log in ``data_dir``:
    to seed a benchmark through the real write path, in process."""
    from commands.application import StoriesApplication
    from commands.event_store import EventStore
    from commands.group_commit import GroupCommitter
    from domain.platform import Platform

    store = EventStore(f"sqlite:///{(data_dir / 'events.sqlite3').resolve()}")
    committer = GroupCommitter(store)
    return store, committer, StoriesApplication(store, committer, Platform.VIGNETTE)
