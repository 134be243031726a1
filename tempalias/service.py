"""Wires config, store and servers into one running process: start, serve, drain, stop.

Dependencies go one way: the CLI builds a Service from a Config and a store; the Service builds
the listeners and servers and owns their lifetime. SIGTERM or SIGINT closes the listeners at once,
lets in-flight work finish for ``drain_seconds``, then stops whatever is left.

With the CLI, this is the one place that holds the whole Config: each part is handed its own
section (``Config.section``) and the collaborators already built (the abuse policy, the alias
service), never the Config.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import time

import gevent
import gevent.event
import greenlet

from tempalias import metrics
from tempalias.abuse import AbusePolicy
from tempalias.aliases import AliasService
from tempalias.config import Config
from tempalias.dkimkeys import load_or_create_keys
from tempalias.domains import DomainService, verification_secret
from tempalias.httpserver import HTTPServer
from tempalias.janitor import Janitor
from tempalias.listeners import bound_port, make_listener
from tempalias.mailauth import MailAuthenticator
from tempalias.resolver import make_resolver
from tempalias.signing import Signer
from tempalias.smtp.delivery import Delivery
from tempalias.smtp.forwarder import Forwarder
from tempalias.smtp.maildir import MaildirDelivery
from tempalias.smtp.relay import SmarthostDelivery
from tempalias.smtp.server import SMTPServer
from tempalias.smtp.shaping import MessageShaper
from tempalias.smtp.spool import spool_directory
from tempalias.srs import SRS, load_or_create_secret
from tempalias.store import AliasStore, DomainStore, RateLimiter
from tempalias.store.runner import OPERATIONS
from tempalias.store.stats import StatsStore
from tempalias.web import create_app
from tempalias.workers import WorkerSockets

log = logging.getLogger(__name__)


class Service:
    def __init__(self, config: Config, store: AliasStore,
                 sockets: "WorkerSockets | None" = None) -> None:
        """``sockets``: listeners bound by a pre-forking parent (``--workers``); else bind here."""
        self.config = config
        self.store = store
        metrics.start_counting(config.rbl_zones, OPERATIONS)
        self.http_socket = sockets.http if sockets else make_listener(config.http_listen)
        self.smtp_socket = None
        try:
            self.smtp_socket = sockets.smtp if sockets else make_listener(config.smtp_listen)
            abuse = config.section("abuse")
            self.policy = AbusePolicy.from_settings(
                abuse, RateLimiter(store.redis, runner=store.runner), config.dns_servers)
            domain_store = domain_store_of(config, store)
            aliases = AliasService.from_settings(config.section("aliases"), store, self.policy,
                                                 domain_store)
            self.domains = domain_service(config, domain_store, self.policy)
            http = config.section("http")
            app = create_app(http, aliases, abuse.trusted_proxies, self.domains)
            self.http = HTTPServer(self.http_socket, app, http, self.policy.connection_subject)
            self.delivery = _delivery(config)
            smtp = config.section("smtp")
            forwarder = Forwarder(smtp, config.domains, store, _srs(config), self.delivery,
                                  self.policy, config.domain_grace, _shaper(config, store),
                                  spool_directory(config.data_dir), abuse.reply_rate)
            self.smtp = SMTPServer(self.smtp_socket, smtp, _banner(config), forwarder,
                                   self.policy)
        except BaseException:
            # e.g. the SMTP port is taken or the TLS key unreadable: leave no listener behind
            self.http_socket.close()
            if self.smtp_socket is not None:
                self.smtp_socket.close()
            raise
        self.janitor = Janitor(store, config.purge_interval, self.domains)
        self.stats = metrics.StatsFlusher(stats_store_of(store))
        self._stopping = gevent.event.Event()

    @property
    def http_port(self) -> int:
        return bound_port(self.http_socket)

    @property
    def smtp_port(self) -> int:
        return bound_port(self.smtp_socket)

    def start(self) -> None:
        self.janitor.start()
        self.stats.start()
        self.http.start()
        host = self.config.http_listen.host
        log.info("http listening on %s:%d", host, self.http_port)
        self.smtp.start()
        log.info("smtp listening on %s:%d; mail goes to %s", self.config.smtp_listen.host,
                 self.smtp_port, self.delivery.description)
        if self.config.postmaster is None and not self.delivery.local:
            log.warning("TEMPALIAS_POSTMASTER is unset: mail to postmaster@ our domains is refused "
                        "(RFC 5321 4.5.1 asks that it reach a person)")

    def ports(self) -> dict[str, int]:
        return {"http": self.http_port, "smtp": self.smtp_port}

    def log_status(self, signum: int | None = None) -> None:
        """SIGUSR1: one line with what the process holds, so leaks are visible from outside."""
        hub = gevent.get_hub()  # the worker threads of gevent's resolver have hubs of their own
        alive = sum(1 for obj in gc.get_objects()
                    if isinstance(obj, greenlet.greenlet) and obj and obj.parent is hub)
        log.info("status: smtp_sessions=%d greenlets=%d", self.smtp.open_sessions, alive)

    def request_stop(self, signum: int | None = None) -> None:
        if self._stopping.is_set():
            return
        if signum is not None:
            log.info("received %s: draining for up to %.0f s",
                     signal.Signals(signum).name, self.config.drain_seconds)
        self._stopping.set()

    def serve_until_signalled(self) -> None:
        handlers = [gevent.signal_handler(sig, self.request_stop, sig)
                    for sig in (signal.SIGTERM, signal.SIGINT)]
        handlers.append(gevent.signal_handler(signal.SIGUSR1, self.log_status, signal.SIGUSR1))
        try:
            self._stopping.wait()
            self.stop()  # a second signal while draining finds the handlers still there: no-op
        finally:
            for handler in handlers:
                handler.cancel()

    def stop(self) -> None:
        """Close the listeners first, then drain every server within one shared deadline."""
        deadline = time.monotonic() + self.config.drain_seconds
        self.http.close()
        self.smtp.close()
        self.http.drain(timeout=max(0.0, deadline - time.monotonic()))
        self.smtp.stop(timeout=max(0.0, deadline - time.monotonic()))
        self.delivery.close()
        self.janitor.stop()
        self.stats.stop()  # the last counts, after the last transaction ended
        log.info("stopped")


def _delivery(config: Config) -> Delivery:
    """The smarthost when one is configured, else a Maildir under the data directory."""
    if config.smarthost is not None:
        return SmarthostDelivery(config.section("smarthost"), _banner(config))
    return MaildirDelivery(os.path.join(config.data_dir, "Maildir"))


def _banner(config: Config) -> str:
    """Our host name in the SMTP greeting, Received: lines and EHLO to the smarthost."""
    return config.banner_hostname or config.primary_domain


def _secret(config: Config) -> str:
    """The secret from the config, else the one generated once into the data directory."""
    return config.srs_secret or load_or_create_secret(config.data_dir)


def _srs(config: Config) -> SRS:
    return SRS(_secret(config), config.primary_domain)


def _shaper(config: Config, store: AliasStore) -> MessageShaper:
    """What seals, signs and checks the mail that is not streamed through: the DKIM key (made
    on first start), our host name in our Authentication-Results, the DNS every check asks."""
    keys = load_or_create_keys(config.section("signing"), config.data_dir)
    authserv_id = _banner(config).lower()  # as authres writes it: dkimpy compares so
    dns = config.section("dns")
    authenticator = MailAuthenticator(make_resolver(dns.dns_servers, dns.dns_timeout),
                                      authserv_id, dns.dns_timeout)
    return MessageShaper(store, authenticator, Signer(keys, authserv_id), config.primary_domain,
                         config.arc)


def domain_store_of(config: Config, store: AliasStore) -> DomainStore:
    """Custom domains on the alias store's Redis and connections, checked on its schedule."""
    return DomainStore(store.redis, runner=store.runner,
                       recheck_ms=int(config.domain_recheck * 1000))


def stats_store_of(store: AliasStore) -> StatsStore:
    """The counts for ``tempalias stats``, on the alias store's Redis and connections."""
    return StatsStore(store.redis, runner=store.runner)


def domain_service(config: Config, domain_store: DomainStore,
                   policy: AbusePolicy | None) -> DomainService:
    """The custom-domain use cases (``policy`` None: the operator's command line): the MX they
    must name defaults to the SMTP banner's host name, the TXT values' key is derived from the
    SRS secret (``domains.verification_secret``)."""
    return DomainService.from_settings(
        config.section("domains"), config.section("dns"), domain_store, policy, config.domains,
        _banner(config), verification_secret(_secret(config)))


def write_ready_file(path: str, ports: dict[str, int]) -> None:
    """Atomically say where we listen, for supervisors and tests that bind port 0."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"pid": os.getpid(), **ports}, handle)
    os.replace(temporary, path)
