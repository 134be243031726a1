"""Real Redis Sentinel and Redis Cluster deployments on loopback: for the failover tests, the demo
and the benchmark.

A store that claims to survive a failover has to be shown one: a primary killed as a machine dies
(SIGKILL, no goodbye to its replicas or clients), a replica promoted by the same Sentinel or Cluster
code that promotes it in production. A mock cannot say how long that takes, what a client sees
meanwhile, or whether a write acknowledged before the kill is still there after it. So these are
real ``redis-server`` processes, each a ``harness.processes.Child``: its own directory under the
caller's ``workdir`` with its config file and log (kept afterwards, for reading why a run failed),
a free loopback port, no persistence (a test's data lives for the test), asked to die with its
parent, stopped on every path.

``start()`` returns only when the deployment is what a test takes for granted: replicas in sync,
every sentinel aware of the primary, its replicas and its peers; every cluster node with all slots
served. A test that started against a half-formed deployment would measure the forming, not the
failover. Every wait polls with a deadline (``harness.processes.wait_for``), never a sleep. The
checks talk plain redis-py on short timeouts, not tempalias's store: the harness must be able to
tell the store's faults from Redis's.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from harness.processes import Child, ChildFailed, wait_for
from tempalias.embedded_redis import free_loopback_port
from tempalias.lifetime import die_with_parent

START_TIMEOUT = 30.0  # seconds for each stage of a start (nodes answering, sync, discovery)
FAILOVER_TIMEOUT = 30.0
ADMIN_TIMEOUT = 1.0  # a check's connect and reply: a node that takes longer is "not yet"
PORT_ATTEMPTS = 3  # a free port can be taken by someone else before redis-server binds it
TOTAL_SLOTS = 16384

# Every node, data or sentinel: loopback only, in the foreground, logging to the Child's log file.
COMMON = ["bind 127.0.0.1", "daemonize no", 'logfile ""']
# Data nodes keep nothing on disk: a test's data lives for the test, and a restart is not a
# failover. "repl-diskless-sync-delay 0": a primary sends a replica its first sync at once, not 5 s
# later in case more replicas come (the default made every start and resync 5 s longer).
# "shutdown-timeout 0": a primary stopped after its replicas does not wait 10 s for them.
DATA = ['save ""', "appendonly no", "repl-diskless-sync-delay 0", "shutdown-timeout 0"]


def _auth(password: str | None) -> list[str]:
    """A data node's password, asked of clients and given to its primary when it replicates."""
    return [f"requirepass {password}", f"masterauth {password}"] if password else []


class RedisNode:
    """One redis-server, or one sentinel, on a free loopback port, configured by a file in its own
    directory (a sentinel rewrites it as it learns; a password kept there stays out of ``ps``).

    ``settings()`` gives the config lines beyond the port; it is called again for each port tried,
    so that a line holding a port of its own (a cluster bus) gets a fresh one too.
    """

    def __init__(self, name: str, directory: Path, settings: Callable[[], list[str]],
                 password: str | None = None, sentinel: bool = False) -> None:
        self.name = name
        self.directory = Path(directory)
        self.settings = settings
        self.password = password
        self.sentinel = sentinel
        self.port = 0
        self.pid: int | None = None  # kept after a stop, for checking that it is gone
        self.child: Child | None = None

    def start(self, timeout: float = START_TIMEOUT) -> "RedisNode":
        """Start it and wait for its PING; a port someone took meanwhile is replaced."""
        self.directory.mkdir(parents=True, exist_ok=True)
        attempts = 1
        while True:
            self.port = free_loopback_port()
            config = self.directory / "redis.conf"
            config.write_text("\n".join([f"port {self.port}", f"dir {self.directory}", *COMMON,
                                         *self.settings(), ""]))
            self.child = Child(self.name, ["redis-server", str(config)]
                               + (["--sentinel"] if self.sentinel else []), self.directory)
            self.child.start()
            self.pid = self.child.pid
            try:
                wait_for(self._answering, timeout, f"{self.name} to answer on port {self.port}")
                return self
            except ChildFailed:
                if attempts == PORT_ATTEMPTS or "already in use" not in self.child.log_text():
                    raise
                attempts += 1

    def _answering(self) -> bool:
        if not self.running():
            raise ChildFailed(f"{self.name} exited:\n" + self.child.log_text()[-4000:])
        return bool(self.ask(lambda client: client.ping()))

    def running(self) -> bool:
        return self.child is not None and self.child.running()

    def ask(self, question: Callable[[redis.Redis], object]):
        """``question(client)`` on a connection of its own, or None when the node does not answer
        (down, loading, timed out, refusing): for checks polled until they come true. Asked
        once: redis-py's default retries (with a backoff of seconds, even of a refused password)
        would hide how long a node really took to answer."""
        client = redis.Redis("127.0.0.1", self.port, password=self.password,
                             socket_timeout=ADMIN_TIMEOUT, socket_connect_timeout=ADMIN_TIMEOUT,
                             retry=Retry(NoBackoff(), 0), decode_responses=True)
        try:
            return question(client)
        except redis.RedisError:
            return None
        finally:
            client.close()

    def role(self) -> str | None:
        """"master", "slave" or "sentinel", as the node itself says (None: it does not answer)."""
        reply = self.ask(lambda client: client.execute_command("ROLE"))
        return reply[0] if reply else None

    def link_up(self) -> bool:
        """A replica's link to its primary is up, and its first sync done."""
        info = self.ask(lambda client: client.info("replication"))
        return bool(info) and info.get("master_link_status") == "up"

    def kill(self) -> None:
        """SIGKILL, as a machine dies: no shutdown, no last word to replicas or clients."""
        if self.child is not None:
            self.child.stop(signal.SIGKILL)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


class Topology:
    """What both deployments share: their nodes, stopped together, on every path."""

    def __init__(self, workdir: Path, password: str | None) -> None:
        self.workdir = Path(workdir)
        self.password = password
        self.nodes: list[RedisNode] = []

    def _start_node(self, name: str, settings: list[str] | Callable[[], list[str]],
                    sentinel: bool = False) -> RedisNode:
        node = RedisNode(name, self.workdir / name,
                         settings if callable(settings) else (lambda: settings),
                         None if sentinel else self.password, sentinel)
        self.nodes.append(node)  # before it starts: a failed start is stopped too
        return node.start()

    def _seeds(self, nodes: list[RedisNode]) -> str:
        """``[:password@]127.0.0.1:P1,127.0.0.1:P2,...``: a URL's host part naming several nodes."""
        credentials = f":{self.password}@" if self.password else ""
        return credentials + ",".join(f"127.0.0.1:{node.port}" for node in nodes)

    def node_at(self, port: int) -> RedisNode:
        return next(node for node in self.nodes if node.port == port)

    def alive(self) -> list[RedisNode]:
        return [node for node in self.nodes if node.running()]

    def pids(self) -> list[int]:
        """Every process it started, kept after they end: for checking that none is left."""
        return [node.pid for node in self.nodes if node.pid is not None]

    def kill(self, port: int) -> None:
        self.node_at(port).kill()

    def stop(self) -> None:
        """Stop every node, the last started first; idempotent. One that will not stop is
        killed, the others are stopped anyway, and the first such failure is raised."""
        failure = None
        for node in reversed(self.nodes):
            try:
                node.stop()
            except ChildFailed as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def _started(self, start: Callable[[], None]) -> None:
        try:
            start()
        except BaseException:
            self.stop()
            raise

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class ReplicatedRedis(Topology):
    """One primary and ``replicas`` replicas in sync, no sentinel: a plain ``redis://`` deployment.
    With no replica it is the single redis-server the benchmark sets a Cluster beside; with one,
    a write waits for a replica (WAIT) as it does on the Cluster, without the Cluster."""

    def __init__(self, workdir: Path, replicas: int = 1, password: str | None = None) -> None:
        super().__init__(workdir, password)
        self.replica_count = replicas
        self.replicas: list[RedisNode] = []

    def start(self, timeout: float = START_TIMEOUT) -> "ReplicatedRedis":
        self._started(lambda: self._start_data_nodes(timeout))
        return self

    def _start_data_nodes(self, timeout: float) -> RedisNode:
        """The primary (returned) and its replicas, once every replica is in sync."""
        primary = self._start_node("primary", [*DATA, *_auth(self.password)])
        for number in range(1, self.replica_count + 1):
            self.replicas.append(self._start_node(f"replica-{number}", [
                *DATA, *_auth(self.password), f"replicaof 127.0.0.1 {primary.port}"]))
        wait_for(lambda: all(replica.link_up() for replica in self.replicas), timeout,
                 "the replicas to be in sync")
        return primary

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT``: the primary."""
        return f"redis://{self._seeds(self.nodes[:1])}"


class SentinelSet(ReplicatedRedis):
    """One primary, ``replicas`` replicas and ``sentinels`` sentinels watching them under the name
    ``service``, with a quorum of a majority of the sentinels.

    ``down_after_ms`` and ``failover_timeout_ms`` are short so that a test sees a promotion within
    seconds of a kill; on loopback no link is slow enough for them to be taken for a death.
    """

    def __init__(self, workdir: Path, service: str = "tempalias", replicas: int = 2,
                 sentinels: int = 3, down_after_ms: int = 1000, failover_timeout_ms: int = 3000,
                 password: str | None = None) -> None:
        super().__init__(workdir, replicas, password)
        self.service = service
        self.sentinel_count = sentinels
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.sentinels: list[RedisNode] = []

    @property
    def majority(self) -> int:
        return self.sentinel_count // 2 + 1

    def start(self, timeout: float = START_TIMEOUT) -> "SentinelSet":
        self._started(lambda: self._start(timeout))
        return self

    def _start(self, timeout: float) -> None:
        # In sync before the sentinels come: a sentinel learns the replicas from the primary's
        # INFO, and promotes only a replica whose link was up.
        primary = self._start_data_nodes(timeout)
        name = self.service
        watch = [f"sentinel monitor {name} 127.0.0.1 {primary.port} {self.majority}",
                 f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                 f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
                 f"sentinel parallel-syncs {name} 1"]
        if self.password:
            watch.append(f"sentinel auth-pass {name} {self.password}")
        for number in range(1, self.sentinel_count + 1):
            self.sentinels.append(self._start_node(f"sentinel-{number}", watch, sentinel=True))
        # Peers are found through hello messages on the primary, every 2 s: a sentinel that does
        # not know the others yet could not gather a quorum.
        wait_for(lambda: all(self._knows_all(sentinel) for sentinel in self.sentinels), timeout,
                 "every sentinel to know the primary, its replicas and the other sentinels")

    def _knows_all(self, sentinel: RedisNode) -> bool:
        primary = sentinel.ask(lambda client: client.sentinel_master(self.service))
        replicas = sentinel.ask(lambda client: client.sentinel_slaves(self.service)) or []
        peers = sentinel.ask(lambda client: client.sentinel_sentinels(self.service)) or []
        return (bool(primary) and primary.get("is_master_down") is False
                and sum(not replica["is_sdown"] for replica in replicas) == self.replica_count
                and len(peers) == self.sentinel_count - 1)

    @property
    def url(self) -> str:
        """``redis+sentinel://[:password@]127.0.0.1:S1,.../SERVICE``: the sentinels, not the data
        nodes, as a client configured for Sentinel names them."""
        return f"redis+sentinel://{self._seeds(self.sentinels)}/{self.service}"

    def _named_primary(self, sentinel: RedisNode) -> int | None:
        address = sentinel.ask(lambda client: client.sentinel_get_master_addr_by_name(self.service))
        return int(address[1]) if address else None

    def primary_port(self) -> int:
        """The primary's port, as the first sentinel that answers names it."""
        return wait_for(lambda: next(filter(None, map(self._named_primary, self.sentinels)), None),
                        ADMIN_TIMEOUT * len(self.sentinels) + 1, "a sentinel to name the primary")

    def kill_primary(self) -> int:
        """SIGKILL the primary; its port."""
        port = self.primary_port()
        self.kill(port)
        return port

    def wait_promoted(self, old_port: int, timeout: float = FAILOVER_TIMEOUT) -> int:
        """The new primary's port, once a majority of the sentinels name a node other than
        ``old_port`` and that node says it is a primary: what a client asking Sentinel then finds."""
        def promoted() -> int | None:
            named = Counter(map(self._named_primary, self.sentinels))
            for port, count in named.items():
                if port not in (None, old_port) and count >= self.majority \
                        and self.node_at(port).role() == "master":
                    return port
            return None

        return wait_for(promoted, timeout, f"the sentinels to promote a replica of port {old_port}")


class ClusterSet(Topology):
    """``primaries`` primaries with ``replicas_per_primary`` replicas each, joined into one Redis
    Cluster by ``redis-cli --cluster create``.

    ``node_timeout_ms`` is short so that a killed primary is failed over within seconds.
    """

    def __init__(self, workdir: Path, primaries: int = 3, replicas_per_primary: int = 1,
                 node_timeout_ms: int = 1000, password: str | None = None) -> None:
        super().__init__(workdir, password)
        self.primary_count = primaries
        self.replicas_per_primary = replicas_per_primary
        self.node_timeout_ms = node_timeout_ms
        self._served: dict[int, list[tuple[int, int]]] = {}  # killed port -> its slot ranges

    def start(self, timeout: float = START_TIMEOUT) -> "ClusterSet":
        self._started(lambda: self._start(timeout))
        return self

    def _settings(self) -> list[str]:
        return [*DATA, *_auth(self.password), "cluster-enabled yes",
                "cluster-config-file nodes.conf", f"cluster-node-timeout {self.node_timeout_ms}",
                # The bus on a free port of its own: the default, port + 10000, may be taken
                # or past 65535 for a port from the kernel's ephemeral range.
                f"cluster-port {free_loopback_port()}",
                # A replica takes over however long ago it last heard from its primary: the
                # harness wants a failover every time; staleness is not what a test is about.
                "cluster-replica-validity-factor 0"]

    def _start(self, timeout: float) -> None:
        count = self.primary_count * (1 + self.replicas_per_primary)
        for number in range(1, count + 1):
            self._start_node(f"node-{number}", self._settings)
        self._create(timeout)
        wait_for(self._formed, timeout, "every cluster node to serve all slots, replicas in sync")

    def _create(self, timeout: float) -> None:
        """``redis-cli --cluster create``, as an operator forms a cluster; the password by
        REDISCLI_AUTH, out of the process list."""
        argv = ["redis-cli", "--cluster", "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes"]
        env = dict(os.environ, **({"REDISCLI_AUTH": self.password} if self.password else {}))
        log_path = self.workdir / "cluster-create.log"
        with open(log_path, "ab") as log:
            status = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log, timeout=timeout, preexec_fn=die_with_parent)
        if status.returncode != 0:
            raise ChildFailed(f"redis-cli --cluster create exited with {status.returncode}:\n"
                              + log_path.read_text(errors="replace")[-4000:])

    def _formed(self) -> bool:
        replicas = [node for node in self.nodes if node.role() == "slave"]
        return (all(self._serves_all(node, len(self.nodes)) for node in self.nodes)
                and len(replicas) == self.primary_count * self.replicas_per_primary
                and all(node.link_up() for node in replicas))

    @staticmethod
    def _serves_all(node: RedisNode, known: int | None = None) -> bool:
        """The node says the cluster is ok and every slot assigned (and, given ``known``, that it
        knows that many nodes: gossip done, so a client that asks it finds them all)."""
        info = node.ask(lambda client: client.execute_command("CLUSTER INFO"))
        return (bool(info) and info["cluster_state"] == "ok"
                and int(info["cluster_slots_assigned"]) == TOTAL_SLOTS
                and (known is None or int(info["cluster_known_nodes"]) == known))

    @staticmethod
    def _slot_map(node: RedisNode) -> list[tuple[int, int, int]] | None:
        """(first slot, last slot, port of its primary) for each range, as ``node`` sees them."""
        reply = node.ask(lambda client: client.execute_command("CLUSTER SLOTS"))
        return None if reply is None else [(int(first), int(last), int(primary[1]))
                                           for first, last, primary, *_ in reply]

    def _any_slot_map(self) -> list[tuple[int, int, int]]:
        return wait_for(lambda: next(filter(None, map(self._slot_map, self.alive())), None),
                        ADMIN_TIMEOUT * len(self.nodes) + 1, "a cluster node to list its slots")

    @property
    def url(self) -> str:
        """``redis+cluster://[:password@]127.0.0.1:P1,...``: every node a seed, so that a client
        finds the cluster whichever nodes are down."""
        return f"redis+cluster://{self._seeds(self.nodes)}"

    def primary_ports(self) -> list[int]:
        """The ports of the primaries serving slots, as the first node that answers sees them."""
        return sorted({port for _, _, port in self._any_slot_map()})

    def port_serving_slot(self, slot: int) -> int:
        return next(port for first, last, port in self._any_slot_map() if first <= slot <= last)

    def kill(self, port: int) -> None:
        """SIGKILL the node at ``port``, remembering the slots it served for
        ``wait_failed_over``."""
        self._served[port] = [(first, last) for first, last, serving in self._any_slot_map()
                              if serving == port]
        super().kill(port)

    def wait_failed_over(self, killed_port: int, timeout: float = FAILOVER_TIMEOUT) -> int:
        """The port of the node that took over the killed node's slots, once every surviving node
        says the cluster is ok and serves those slots from a node that says it is a primary."""
        ranges = self._served.get(killed_port)
        if not ranges:
            raise ValueError(f"port {killed_port} is no primary that kill() killed")

        def failed_over() -> int | None:
            takers = set()
            for node in self.alive():
                slot_map = self._slot_map(node) if self._serves_all(node) else None
                if slot_map is None:
                    return None
                takers |= {port for start, _ in ranges
                           for first, last, port in slot_map if first <= start <= last}
            if len(takers) != 1 or killed_port in takers:
                return None
            taker = takers.pop()
            return taker if self.node_at(taker).role() == "master" else None

        return wait_for(failed_over, timeout, f"the slots of port {killed_port} to be failed over")
