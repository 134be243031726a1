"""tempalias/listeners.py: a service bound to the IPv6 wildcard serves IPv4 and IPv6 clients."""

from __future__ import annotations

import http.client
import smtplib

import pytest

import netns
from harness.processes import ServiceProcess

ON_EVERY_ADDRESS = {"TEMPALIAS_HTTP_LISTEN": "[::]:0", "TEMPALIAS_SMTP_LISTEN": "[::]:0"}
HEAD_REQUEST = "GET /healthz HTTP/1.0\\r\\n\\r\\n"  # escaped for netns.first_line


@pytest.mark.skipif(not netns.has_ipv6_loopback(), reason="this machine has no ::1")
def test_a_service_on_the_ipv6_wildcard_greets_each_client_by_its_own_address(service_factory):
    service = service_factory(env=ON_EVERY_ADDRESS)
    for host in ("127.0.0.1", "::1"):
        conn = http.client.HTTPConnection(host, service.ports["http"], timeout=30)
        try:
            conn.request("GET", "/healthz")
            assert conn.getresponse().status == 200, host
        finally:
            conn.close()
        with smtplib.SMTP(host, service.smtp_port, timeout=30) as client:
            code, reply = client.ehlo("client.example")
            assert code == 250
            # an IPv4 client is 127.0.0.1 here (and in Received:), not ::ffff:127.0.0.1
            assert reply.decode().splitlines()[0].split()[-1] == host


@pytest.mark.skipif(not netns.available(), reason="needs root and network namespaces")
def test_the_ipv6_wildcard_takes_ipv4_even_where_the_host_default_is_ipv6_only(tmp_path):
    """net.ipv6.bindv6only=1 (some hosts' default) makes a plain [::] socket IPv6-only; a
    service bound to [::] must still answer on 127.0.0.1. Set in a namespace of the test's own."""
    namespace = netns.NetNamespace()
    try:
        namespace.run("sh", "-c", "echo 1 > /proc/sys/net/ipv6/bindv6only")
        service = ServiceProcess(tmp_path, ON_EVERY_ADDRESS, prefix=namespace.prefix).start()
        try:
            for host in ("127.0.0.1", "::1"):
                status_line = namespace.first_line(host, service.ports["http"], HEAD_REQUEST)
                assert status_line.split()[1:2] == ["200"], (host, status_line)
                banner = namespace.first_line(host, service.smtp_port)
                assert banner.startswith("220 "), (host, banner)
        finally:
            service.stop()
    finally:
        namespace.close()
