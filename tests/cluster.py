"""A real Redis Cluster on loopback for integration tests: N masters with R replicas each, run from
the machine's ``redis-server`` and assembled with ``redis-cli --cluster create``.

    cluster = LocalRedisCluster.start(tmp_dir)      # 3 masters + 3 replicas, a few seconds
    cluster.url          # "redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3" (the masters)
    client = cluster.client()                       # a redis.cluster.RedisCluster
    killed = cluster.kill_master_for("some-key")    # SIGKILL + wait for the replica's promotion
    cluster.restart(killed)                         # back as a replica of the promoted node
    cluster.stop()

``url`` is fixed at start: after a failover it still names the killed master (redis-py skips a
dead startup node); ``current_url()`` names the masters of the moment.

Nodes use ``cluster-node-timeout 1000`` and ``cluster-replica-validity-factor 0`` so a failover
takes about 2-3 s and a replica may always take over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from stories.backends import connect_redis

HOST = "127.0.0.1"
NODE_TIMEOUT_MS = 1000
START_DEADLINE_S = 30.0
FAILOVER_DEADLINE_S = 30.0


class ClusterError(RuntimeError):
    """The cluster could not be started or did not reach the expected state in time."""


def redis_binaries() -> tuple[str, str]:
    """Paths of ``redis-server`` and ``redis-cli``; raises ClusterError naming what is missing."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    missing = [name for name, path in (("redis-server", server), ("redis-cli", cli)) if not path]
    if missing:
        raise ClusterError(f"{' and '.join(missing)} not found on PATH")
    return server, cli  # type: ignore[return-value]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on loopback whose cluster bus port (port + 10000) is free
    too. Ports come from the kernel (bind to 0), kept below 55536 so the bus port is valid."""
    ports: list[int] = []
    held: list[socket.socket] = []
    try:
        for _ in range(count * 200):
            if len(ports) == count:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            port = s.getsockname()[1]
            held.append(s)
            clash = {port + 10000, port - 10000} & set(ports)  # a bus port of another node
            if port >= 55536 or clash or not _port_free(port + 10000):
                continue
            ports.append(port)
    finally:
        for s in held:
            s.close()
    if len(ports) < count:
        raise ClusterError(f"could not find {count} free port pairs on {HOST}")
    return ports


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


@dataclass
class _Node:
    port: int
    dir: Path
    proc: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.dir / "redis.log"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalRedisCluster:
    root: Path
    server: str
    cli: str
    masters: int
    replicas: int
    nodes: dict[int, _Node] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    url: str = ""
    killed: set[int] = field(default_factory=set)  # ports stopped on purpose (kill_master_for)

    # -- life cycle ---------------------------------------------------------------------------

    @classmethod
    def start(
        cls, tmp_dir: str | os.PathLike, masters: int = 3, replicas: int = 1, deadline_s: float = START_DEADLINE_S
    ) -> LocalRedisCluster:
        server, cli = redis_binaries()
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        root = Path(tmp_dir)
        root.mkdir(parents=True, exist_ok=True)
        cluster = cls(root=root, server=server, cli=cli, masters=masters, replicas=replicas)
        total = masters * (1 + replicas)
        for attempt in range(3):  # a port taken between the check and the bind: pick new ports
            cluster.ports = free_ports(total)
            cluster.nodes = {p: _Node(p, root / f"node-{p}") for p in cluster.ports}
            try:
                for node in cluster.nodes.values():
                    cluster._spawn(node)
                cluster._wait(
                    lambda: all(cluster._ping(p) for p in cluster.ports), deadline_s, "every node answering PING"
                )
                break
            except ClusterError:
                cluster._kill_all()
                if attempt == 2:
                    raise
        try:
            cluster._create(deadline_s)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def stop(self) -> None:
        """Kill every node and remove the cluster's files."""
        self._kill_all()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_all(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
        for node in self.nodes.values():
            if node.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(timeout=10)

    def __enter__(self) -> LocalRedisCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, node: _Node) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.server,
            "--port",
            str(node.port),
            "--bind",
            HOST,
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(node.dir),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{node.port}.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            "--cluster-replica-validity-factor",
            "0",
            "--cluster-require-full-coverage",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
            # replicas sync at once (the default waits 5 s for more replicas to join a sync)
            "--repl-diskless-sync-delay",
            "0",
            "--logfile",
            "",  # log to stdout, which goes to the node's log file
        ]
        # same process group as pytest: a Ctrl-C or a kill of the group takes the nodes along
        with open(node.log, "ab") as log:
            node.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=node.dir
            )

    def _create(self, deadline_s: float) -> None:
        cmd = [
            self.cli,
            "--cluster",
            "create",
            *(f"{HOST}:{p}" for p in self.ports),
            "--cluster-replicas",
            str(self.replicas),
            "--cluster-yes",
        ]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=deadline_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise ClusterError(f"redis-cli --cluster create timed out\n{self.diagnostics()}") from e
        if out.returncode != 0 or "[OK] All 16384 slots covered" not in out.stdout:
            raise ClusterError(
                f"redis-cli --cluster create failed (rc={out.returncode}):\n"
                f"{out.stdout[-3000:]}\n{out.stderr[-2000:]}\n{self.diagnostics()}"
            )
        self._wait(
            self._healthy,
            deadline_s,
            f"cluster_state:ok on all nodes with {self.masters} masters each having "
            f"{self.replicas} connected replica(s)",
        )
        self.url = self.current_url()

    # -- state ------------------------------------------------------------------------------

    def _call(self, port: int, *args):
        """One command on one node over a raw connection: the reply as the server sent it
        (strings decoded), without redis-py's reply parsing (e.g. CLUSTER NODES -> dict)."""
        conn = redis.Connection(host=HOST, port=port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)
        try:
            conn.connect()
            conn.send_command(*args)
            return conn.read_response()
        finally:
            conn.disconnect()

    def _ping(self, port: int) -> bool:
        try:
            return self._call(port, "PING") in ("PONG", True)
        except (redis.RedisError, OSError):
            return False

    def live_ports(self) -> list[int]:
        return [p for p in self.ports if self.nodes[p].alive()]

    def cluster_nodes(self, port: int | None = None) -> list[dict]:
        """CLUSTER NODES as seen by ``port`` (default: any live node), one dict per node:
        id, port, flags (set), master_id, link, slots (list of (start, end))."""
        ports = [port] if port is not None else self.live_ports()
        last: Exception | None = None
        for p in ports:
            try:
                raw = self._call(p, "CLUSTER", "NODES")
                break
            except (redis.RedisError, OSError) as e:
                last = e
        else:
            raise ClusterError(f"no node answered CLUSTER NODES: {last}")
        return _parse_cluster_nodes(str(raw))

    def master_ports(self, view_from: int | None = None) -> list[int]:
        """Ports of the live masters that own slots, in slot order."""
        masters = [
            n
            for n in self.cluster_nodes(view_from)
            if "master" in n["flags"] and not n["flags"] & {"fail", "fail?"} and n["slots"]
        ]
        masters.sort(key=lambda n: n["slots"][0][0])
        return [n["port"] for n in masters]

    def master_for_slot(self, slot: int, view_from: int | None = None) -> int:
        for n in self.cluster_nodes(view_from):
            if "master" in n["flags"] and any(a <= slot <= b for a, b in n["slots"]):
                return n["port"]
        raise ClusterError(f"no master owns slot {slot}")

    def master_for(self, key: str | bytes) -> int:
        return self.master_for_slot(key_slot(key.encode() if isinstance(key, str) else key))

    def replicas_of(self, master_port: int, view_from: int | None = None) -> list[int]:
        nodes = self.cluster_nodes(view_from)
        ids = {n["port"]: n["id"] for n in nodes}
        mid = ids.get(master_port)
        return [n["port"] for n in nodes if "slave" in n["flags"] and n["master_id"] == mid]

    def _healthy(self) -> bool:
        """Every live node: cluster_state:ok and the same view; ``masters`` slot-owning masters,
        each with ``replicas`` replicas whose link is up (connected_slaves / master_link_status)."""
        try:
            live = self.live_ports()
            for p in live:
                info = self._call(p, "CLUSTER INFO")
                if "cluster_state:ok" not in (info if isinstance(info, str) else str(info)):
                    return False
            views = [self.cluster_nodes(p) for p in live]
            owners = {
                tuple(sorted((n["port"], tuple(n["slots"])) for n in v if "master" in n["flags"] and n["slots"]))
                for v in views
            }
            if len(owners) != 1:  # the nodes do not agree yet on who serves which slots
                return False
            for view in views:
                masters = [
                    n
                    for n in view
                    if "master" in n["flags"] and n["slots"] and "fail" not in n["flags"] and "fail?" not in n["flags"]
                ]
                if len(masters) != self.masters:
                    return False
                live_masters = {n["port"] for n in masters}
                if not live_masters <= set(live):
                    return False
                for m in masters:
                    reps = [
                        n
                        for n in view
                        if "slave" in n["flags"]
                        and n["master_id"] == m["id"]
                        and "fail" not in n["flags"]
                        and "fail?" not in n["flags"]
                    ]
                    if len(reps) < self.replicas:
                        return False
            for p in live:
                rep = self._info(p, "replication")
                if rep.get("role") == "slave" and (
                    rep.get("master_link_status") != "up" or rep.get("master_sync_in_progress") != "0"
                ):
                    return False
            for m in self.master_ports(live[0]):
                rep = self._info(m, "replication")
                if int(rep.get("connected_slaves", 0)) < self.replicas:
                    return False
                # a replica is "online" only after the full sync finished
                for k, v in rep.items():
                    if k.startswith("slave") and k[5:].isdigit() and "state=online" not in str(v):
                        return False
            return True
        except (redis.RedisError, OSError, ClusterError):
            return False

    def _info(self, port: int, section: str) -> dict:
        text = str(self._call(port, "INFO", section))
        out = {}
        for line in text.splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v
        return out

    def _wait(self, ok, deadline_s: float, what: str) -> None:
        end = time.monotonic() + deadline_s
        while True:
            if ok():
                return
            dead = [
                p
                for p, n in self.nodes.items()
                if n.proc is not None and n.proc.poll() is not None and p not in self.killed
            ]
            if dead:
                raise ClusterError(f"redis node(s) {dead} exited while waiting for {what}\n{self.diagnostics()}")
            if time.monotonic() > end:
                raise ClusterError(f"timed out after {deadline_s:.0f}s waiting for {what}\n{self.diagnostics()}")
            time.sleep(0.05)

    def diagnostics(self, tail_lines: int = 25) -> str:
        parts = []
        for p, node in self.nodes.items():
            state = "running" if node.alive() else (f"exited rc={node.proc.returncode}" if node.proc else "not started")
            try:
                lines = node.log.read_text(errors="replace").splitlines()[-tail_lines:]
            except OSError:
                lines = ["(no log)"]
            parts.append(f"--- node {p} ({state}) {node.log}:\n" + "\n".join(lines))
        return "\n".join(parts)

    # -- clients ------------------------------------------------------------------------------

    def current_url(self) -> str:
        """Like ``url`` but naming the masters as they are now (after failovers)."""
        return "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in self.master_ports())

    def client(self, **kwargs) -> RedisCluster:
        """A redis-py cluster client bootstrapped from the masters in ``url``."""
        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("socket_timeout", 5)
        kwargs.setdefault("socket_connect_timeout", 2)
        return connect_redis(self.url, **kwargs)  # the product's own parsing of redis+cluster://

    def flush(self) -> None:
        """FLUSHALL on every current master (replicas follow)."""
        for p in self.master_ports():
            self._call(p, "FLUSHALL")

    # -- faults -------------------------------------------------------------------------------

    def kill_master_for(self, key: str | bytes, deadline_s: float = FAILOVER_DEADLINE_S) -> int:
        """SIGKILL the master that owns ``key``'s slot; return its port once a replica has been
        promoted, the slot is served by it, and every surviving node reports cluster_state:ok
        with ``masters`` masters (the promoted one has no replica until ``restart``)."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        port = self.master_for_slot(slot)
        replicas = self.replicas_of(port)
        if not replicas:
            raise ClusterError(f"master {port} for slot {slot} has no replica to fail over to")
        self.killed.add(port)
        node = self.nodes[port]
        node.proc.kill()  # SIGKILL
        node.proc.wait(timeout=10)

        def promoted() -> bool:
            try:
                live = self.live_ports()
                for p in live:
                    info = self._call(p, "CLUSTER INFO")
                    if "cluster_state:ok" not in str(info):
                        return False
                    owner = self.master_for_slot(slot, view_from=p)
                    if owner == port or owner not in replicas:
                        return False
                    if len(self.master_ports(p)) != self.masters:
                        return False
                owner = self.master_for_slot(slot, view_from=live[0])
                role = self._call(owner, "ROLE")
                return str(role[0]) == "master"
            except (redis.RedisError, OSError, ClusterError):
                return False

        self._wait(promoted, deadline_s, f"a replica of {port} to take over slot {slot}")
        return port

    def restart(self, port: int, deadline_s: float = START_DEADLINE_S) -> None:
        """Start a killed node again from its nodes-P.conf; it rejoins, is told it lost its slots,
        and becomes a replica of the promoted node. Returns once the cluster is fully healthy again
        (every master with its replicas, links up, synced)."""
        node = self.nodes[port]
        if node.alive():
            raise ClusterError(f"node {port} is still running")
        self._spawn(node)
        self.killed.discard(port)
        self._wait(self._healthy, deadline_s, f"node {port} rejoined as a replica")


def _parse_cluster_nodes(text: str) -> list[dict]:
    nodes = []
    for line in text.strip().splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        addr = parts[1].split("@", 1)[0]
        slots = []
        for s in parts[8:]:
            if s.startswith("["):  # migrating / importing slot markers
                continue
            a, _, b = s.partition("-")
            slots.append((int(a), int(b or a)))
        nodes.append(
            {
                "id": parts[0],
                "port": int(addr.rsplit(":", 1)[1]) if addr.rsplit(":", 1)[1] else 0,
                "flags": set(parts[2].split(",")),
                "master_id": None if parts[3] == "-" else parts[3],
                "link": parts[7],
                "slots": slots,
            }
        )
    return nodes


def start_cluster(tmp_dir: str | os.PathLike, masters: int = 3, replicas: int = 1) -> LocalRedisCluster:
    return LocalRedisCluster.start(tmp_dir, masters=masters, replicas=replicas)


__all__ = [
    "ClusterError",
    "LocalRedisCluster",
    "free_ports",
    "redis_binaries",
    "start_cluster",
]
