"""``make cluster-demo``: several tempalias nodes on one Redis Cluster (or Sentinel set) behind
nginx, on loopback, in the foreground until Ctrl-C.

Issue 15 lets several ``tempalias serve`` processes, "nodes", share one Redis deployment; this is
what such a deployment looks like, small enough to try by hand (curl, swaks) and to point the load
test at (``make loadtest LOADTEST_ARGS=--cluster``). The nodes share what makes them one service:
the Redis URL, the SRS secret (a bounce to an SRS address that one node wrote may come back through
another) and the DKIM key (the one published in DNS must sign and seal on every node); each keeps
its own data directory (spool, ...). nginx spreads HTTP over the nodes as a deployment's front
would; SMTP stays each node's own port, as an MX record set names several hosts.

Like loadtest/stack.py's ``Stack`` (whose settings it reuses: every abuse limit off, a DNS server
of its own, a counting sink as smarthost), ``ClusterStack`` stops, on every path, every process it
started; every child also dies with its parent.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.processes import Child, ChildFailed, ServiceProcess, wait_for
from harness.redis_topology import ClusterSet, SentinelSet
from loadtest.stack import DOMAIN, ThrowawayStack, interrupt_on_sigterm
from tempalias.embedded_redis import free_loopback_port
from tempalias.secretfile import create_once

NGINX_START_TIMEOUT = 10.0

NGINX_CONF = """\
# Written by loadtest/cluster_demo.py: the HTTP front of the demo's tempalias nodes.
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    upstream tempalias_nodes {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://tempalias_nodes;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
"""


class NginxFront:
    """nginx in the foreground as a ``Child``, round robin over ``upstream_ports``; its pid file,
    logs and temporary files in ``workdir`` and a port above 1024, so no root is needed."""

    def __init__(self, workdir: Path, upstream_ports: list[int]) -> None:
        self.workdir = Path(workdir)
        self.upstream_ports = upstream_ports
        self.port = 0
        self.child: Child | None = None

    def start(self) -> "NginxFront":
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        self.port = free_loopback_port()
        config = self.workdir / "nginx.conf"
        servers = "\n".join(f"        server 127.0.0.1:{port};" for port in self.upstream_ports)
        config.write_text(NGINX_CONF.format(dir=self.workdir, servers=servers, port=self.port))
        self.child = Child("nginx", ["nginx", "-p", str(self.workdir), "-e",
                                     str(self.workdir / "error.log"), "-c", str(config),
                                     "-g", "daemon off;"], self.workdir)
        self.child.start()
        wait_for(self._answering, NGINX_START_TIMEOUT, f"nginx to listen on port {self.port}")
        return self

    def _answering(self) -> bool:
        if not self.child.running():
            error_log = self.workdir / "error.log"
            raise ChildFailed("nginx exited:\n" + self.child.log_text()[-2000:]
                              + (error_log.read_text()[-2000:] if error_log.exists() else ""))
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


def shared_dkim_key(path: Path) -> Path:
    """One RSA key for every node (as an operator gives each the published one by
    TEMPALIAS_DKIM_KEY), else each would make its own DATA_DIR/dkim.key."""
    def new_key() -> bytes:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption())

    create_once(str(path), new_key)
    return path


class ClusterStack(ThrowawayStack):
    """A Redis Cluster (3 primaries, 3 replicas; or with ``sentinel`` a primary, 2 replicas and 3
    sentinels), ``nodes`` tempalias nodes of ``workers`` processes each, nginx in front of their
    HTTP ports, and a counting sink as their smarthost (ours, unless ``smarthost`` names one)."""

    def __init__(self, workdir: Path | None = None, nodes: int = 3, sentinel: bool = False,
                 workers: int = 1, smarthost: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(workdir, smarthost, env, "tempalias-cluster-")
        self.node_count = nodes
        self.sentinel = sentinel
        self.workers = workers
        self.redis: ClusterSet | SentinelSet | None = None
        self.nodes: list[ServiceProcess] = []
        self.front: NginxFront | None = None

    def _start(self) -> None:
        redis_dir = self.workdir / "redis"
        self.redis = (SentinelSet(redis_dir) if self.sentinel else ClusterSet(redis_dir)).start()
        smarthost = self._start_peers()
        # tempalias_env gives every node the same TEMPALIAS_SRS_SECRET as well.
        shared = {"TEMPALIAS_REDIS_URL": self.redis.url,
                  "TEMPALIAS_DKIM_KEY": str(shared_dkim_key(self.workdir / "dkim.key")),
                  "TEMPALIAS_DNS_SERVERS": self.dns.address, **self.extra_env}
        for number in range(1, self.node_count + 1):
            self.nodes.append(self._service(self.workdir / f"node-{number}",
                                            f"tempalias-{number}", self.workers, smarthost, shared))
        self.front = NginxFront(self.workdir / "nginx",
                                [node.ports["http"] for node in self.nodes]).start()

    @property
    def http_url(self) -> str:
        """The nginx front."""
        return self.front.url

    @property
    def smtp_ports(self) -> list[int]:
        return [node.smtp_port for node in self.nodes]

    @property
    def redis_url(self) -> str:
        return self.redis.url

    @property
    def services(self) -> list[ServiceProcess]:
        return self.nodes

    def description(self) -> dict:
        """What runs where, as the ready file and the banner say it."""
        return {"http": self.http_url, "redis_url": self.redis_url,
                "nodes": [{"name": node.name, "http": node.http_url, "smtp": node.smtp_port,
                           "pid": node.ports["pid"]} for node in self.nodes],
                "sink_status_file": str(self.sink.status_file) if self.sink else None,
                "logs": str(self.workdir)}

    def stop(self) -> None:
        """The front, then the nodes (they drain into the sink), then the sink, DNS and Redis;
        every one is stopped even when another fails to stop."""
        children = [self.front, *reversed(self.nodes)]
        self.front, self.nodes = None, []
        failure = None
        for child in children:
            try:
                if child is not None:
                    child.stop()
            except ChildFailed as exc:
                failure = failure or exc
        try:
            self._stop_peers()
        finally:
            if self.redis is not None:
                redis_set, self.redis = self.redis, None
                redis_set.stop()
        if failure is not None:
            raise failure


def banner(stack: ClusterStack) -> str:
    nodes = stack.nodes
    second = nodes[min(1, len(nodes) - 1)]
    lines = [f"HTTP front (nginx, round robin over {len(nodes)} nodes): {stack.http_url}",
             *(f"  {node.name}: HTTP {node.http_url}, SMTP 127.0.0.1:{node.smtp_port}"
               for node in nodes),
             f"Redis: {stack.redis_url}",
             f"smarthost: {'a counting sink' if stack.sink else stack.external_smarthost}; "
             f"every abuse limit is off; logs: {stack.workdir}",
             "", f"Try it: create an alias through nginx, then send to its address (the "
             f"\"address\" curl prints, ...@{DOMAIN}) through {second.name}:",
             f"  curl -s -H 'Content-Type: application/json' -d '{{\"target\": "
             f"\"you@example.org\", \"days\": 1}}' {stack.http_url}/api/v1/aliases",
             f"  swaks --server 127.0.0.1:{second.smtp_port} --from someone@sender.example "
             f"--to ADDRESS",
             "Ctrl-C stops it all."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].strip("`"))
    parser.add_argument("--sentinel", action="store_true",
                        help="Redis Sentinel (a primary, 2 replicas, 3 sentinels) instead of a "
                             "Redis Cluster (3 primaries, 3 replicas)")
    parser.add_argument("--nodes", type=int, default=3, help="tempalias nodes (default 3)")
    parser.add_argument("--workers", type=int, default=1, help="tempalias --workers of each node")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep configs and logs here (default: a temporary directory)")
    parser.add_argument("--ready-file", type=Path, default=None,
                        help="once everything runs, write what runs where here (JSON)")
    args = parser.parse_args()
    with ClusterStack(args.workdir, nodes=args.nodes, sentinel=args.sentinel,
                      workers=args.workers) as stack:
        print(banner(stack), flush=True)
        if args.ready_file is not None:
            temporary = args.ready_file.with_name(args.ready_file.name + ".tmp")
            temporary.write_text(json.dumps(stack.description()))
            temporary.replace(args.ready_file)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    print(f"stopped; the sink counted {stack.sink_counts}", flush=True)
    return 0


if __name__ == "__main__":
    interrupt_on_sigterm()
    raise SystemExit(main())
