"""The ``redis_cluster`` fixture (tests/cluster.py) is a real Redis Cluster: keys spread over its 3
masters, multi-key commands across slots are refused while hash-tagged keys work, and killing a
master promotes its replica without losing a write that WAIT reported as replicated. The failover
test restarts the killed node, so the session fixture stays a 3-master cluster with replicas."""

from __future__ import annotations

import uuid

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from stories.backends import cluster_options

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def client(redis_cluster):
    c = redis_cluster.client()
    yield c
    c.close()


def _assert_healthy(cluster) -> None:
    masters = cluster.master_ports()
    assert len(masters) == 3, cluster.diagnostics()
    for m in masters:
        assert len(cluster.replicas_of(m)) == 1, cluster.diagnostics()


def test_url_names_the_three_masters(redis_cluster, redis_cluster_url):
    assert redis_cluster_url.startswith("redis+cluster://")
    nodes, _ = cluster_options(redis_cluster_url)
    assert len(nodes) == 3
    assert {port for _, port in nodes} <= set(redis_cluster.ports)
    assert len(redis_cluster.ports) == 6


def test_keys_are_served_by_all_three_masters(redis_cluster, client: RedisCluster):
    _assert_healthy(redis_cluster)
    prefix = f"spread:{uuid.uuid4().hex[:8]}:"
    keys = [f"{prefix}{i}" for i in range(100)]
    for k in keys:
        client.set(k, k)
    assert client.mget_nonatomic(keys) == keys

    primaries = client.get_primaries()
    assert len(primaries) == 3
    for node in primaries:
        owned = [k for k in keys if client.get_node_from_key(k).name == node.name]
        assert owned, f"no key of 100 landed on {node.name}"
        conn = client.get_redis_connection(node)
        assert conn.dbsize() >= len(owned)
        for k in owned[:5]:
            assert conn.execute_command("CLUSTER COUNTKEYSINSLOT", key_slot(k.encode())) >= 1
            assert conn.get(k) == k  # served by this node itself, not a redirect
    assert client.delete(*keys) == 100  # redis-py splits a multi-key DEL by slot


def test_cross_slot_multi_key_commands_are_refused_hash_tags_work(client: RedisCluster):
    a, b = f"a:{uuid.uuid4().hex}", f"b:{uuid.uuid4().hex}"
    while key_slot(a.encode()) == key_slot(b.encode()):
        b = f"b:{uuid.uuid4().hex}"

    # redis-py refuses before sending ...
    with pytest.raises(RedisClusterException, match="same key slot"):
        client.mget(a, b)
    # ... and the server refuses too: "-CROSSSLOT Keys in request don't hash to the same slot",
    # which redis-py raises as ClusterCrossSlotError (the CROSSSLOT code is not in the message)
    node = client.get_node_from_key(a)
    with pytest.raises(ClusterCrossSlotError, match="same slot"):
        client.get_redis_connection(node).execute_command("MGET", a, b)

    tag = uuid.uuid4().hex[:8]
    ta, tb = f"{{{tag}}}a", f"{{{tag}}}b"
    assert key_slot(ta.encode()) == key_slot(tb.encode())
    client.mset({ta: "1", tb: "2"})
    assert client.mget(ta, tb) == ["1", "2"]
    assert client.get_redis_connection(client.get_node_from_key(ta)).execute_command("MGET", ta, tb) == ["1", "2"]
    client.delete(ta, tb)


def test_failover_keeps_a_write_acknowledged_by_wait(redis_cluster, client: RedisCluster, request):
    _assert_healthy(redis_cluster)
    key, value = "x", f"v-{uuid.uuid4().hex}"
    # SET and WAIT on one connection of the key's master: WAIT counts the replicas that have
    # this connection's writes.
    node = client.get_node_from_key(key)
    pipe = client.get_redis_connection(node).pipeline(transaction=False)
    pipe.set(key, value)
    pipe.execute_command("WAIT", 1, 1000)
    assert pipe.execute() == [True, 1]

    old_master = redis_cluster.master_for(key)
    killed = redis_cluster.kill_master_for(key)
    assert killed == old_master

    def restart_if_killed():
        if killed in redis_cluster.killed:
            redis_cluster.restart(killed)

    request.addfinalizer(restart_if_killed)

    new_master = redis_cluster.master_for(key)
    assert new_master != killed
    assert len(redis_cluster.master_ports()) == 3
    assert client.get(key) == value  # the same client follows the promotion

    redis_cluster.restart(killed)  # rejoins as a replica of the promoted node
    assert redis_cluster.replicas_of(new_master) == [killed]
    _assert_healthy(redis_cluster)
    replica = redis.Redis(host="127.0.0.1", port=killed, decode_responses=True)
    try:
        replica.execute_command("READONLY")
        assert replica.get(key) == value
    finally:
        replica.close()
    client.delete(key)
