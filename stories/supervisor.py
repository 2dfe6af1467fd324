"""``stories run``: start the embedded servers a setting leaves unset, then every process as a
child (``stories <name>``) pointed at them; stop everything cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from stories import embedded
from stories.settings import Settings

log = logging.getLogger("stories.run")
PROCESSES = ("command-api", "query-api", "projector", "expirer", "relay")


def run_everything(settings: Settings) -> int:
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if embedded.running_urls(data_dir):
        log.error("another `stories run` is serving %s; stop it first", data_dir)
        return 2
    servers: list[embedded.EmbeddedServer] = []
    children: dict[str, subprocess.Popen] = {}
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        env = dict(os.environ, STORIES_DATA_DIR=str(data_dir))
        if settings.mongodb_url is None:
            servers.append(embedded.start_secantus(data_dir))
            env["STORIES_MONGODB_URL"] = servers[-1].url
        if settings.redis_url is None:
            servers.append(embedded.start_valkey(data_dir))
            env["STORIES_REDIS_URL"] = servers[-1].url
        env.setdefault("STORIES_BROKER_URL", env.get("STORIES_REDIS_URL", ""))
        embedded.write_state(data_dir, servers)
        for server in servers:
            log.info("embedded %s at %s (data in %s)", server.name, server.url, data_dir)
        exe = Path(sys.executable).parent / "stories"
        for name in PROCESSES:
            children[name] = subprocess.Popen([str(exe), name], env=env, preexec_fn=embedded._die_with_parent)
        log.info("command API http://%s:%s  query API http://%s:%s  (Ctrl-C stops everything)",
                 settings.host, settings.command_port, settings.host, settings.query_port)
        while not stop.wait(0.5):
            for name, child in children.items():
                if child.poll() is not None:
                    log.error("%s exited with code %s; stopping everything", name, child.returncode)
                    stop.set()
        return 0 if all(c.poll() in (None, 0, -signal.SIGTERM) for c in children.values()) else 1
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        for server in reversed(servers):
            server.stop()
        embedded.clear_state(data_dir)
        log.info("stopped")
