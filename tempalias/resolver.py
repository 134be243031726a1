"""The one way tempalias makes a DNS look-up: a dnspython resolver through TEMPALIAS_DNS_SERVERS.

Block lists (``rbl.py``) and custom-domain checks (``domaincheck.py``) both ask through it. With no
servers configured it uses the system's (``/etc/resolv.conf``). It keeps no cache of its own: each
caller knows what an answer means to it and how long it may keep it (the RBL caches listings,
domain checks must see a record the moment it is published). A SERVFAIL is not retried: it is an
answer that the caller reports ("DNS did not answer, try again later"), not something to wait out.
Each look-up may take ``timeout`` seconds in all, retries included, unless the caller passes a
``lifetime`` of its own; a query sent to a silent server is sent again after dnspython's own
per-attempt wait, as long as the lifetime lasts.
"""

from __future__ import annotations

import logging

import dns.nameserver
import dns.resolver

from tempalias.config import Listen

log = logging.getLogger(__name__)

RESOLV_CONF = "/etc/resolv.conf"


def make_resolver(dns_servers: tuple[Listen, ...], timeout: float) -> dns.resolver.Resolver:
    """A resolver asking ``dns_servers`` (each a host and port), else the system's resolvers."""
    resolver = dns.resolver.Resolver(configure=False)
    if dns_servers:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(server.host, server.port)
                                for server in dns_servers]
    else:
        try:
            resolver.read_resolv_conf(RESOLV_CONF)
        except dns.resolver.NoResolverConfiguration:
            # every look-up then fails, visibly (each caller logs it), instead of the start-up
            log.error("dns: the system has no resolver configured (%s): set TEMPALIAS_DNS_SERVERS",
                      RESOLV_CONF)
    resolver.cache = None
    resolver.retry_servfail = False
    resolver.lifetime = timeout
    return resolver
