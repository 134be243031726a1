"""The ``tempalias`` command: ``serve`` and the operator's admin commands.

This is the entry point, and so the one place that monkey-patches: ``patch_all()`` runs before
anything else is imported, so that redis-py, smtplib and dnspython all yield to gevent.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from typing import Iterator  # noqa: E402

from tempalias.addresses import domain_to_unicode, parse_domain_name  # noqa: E402
from tempalias.aliases import (  # noqa: E402
    AliasNotFound, AliasRules, AliasService, InvalidOrder, StoreUnavailable, iso_utc)
from tempalias.domains import DomainNotFound, DomainService, DomainTaken  # noqa: E402
from tempalias import metrics  # noqa: E402
from tempalias.config import Config, ConfigError, load_config  # noqa: E402
from tempalias.embedded_redis import EmbeddedRedisError, RedisServer  # noqa: E402
from tempalias import logformat  # noqa: E402
from tempalias.store import AliasStore, Durability, connect  # noqa: E402
from tempalias.store.migration import Migration  # noqa: E402
from tempalias.webextension import BROWSERS  # noqa: E402

log = logging.getLogger("tempalias")


def _embedded_redis(config: Config) -> RedisServer:
    return RedisServer(os.path.join(config.data_dir, "redis"))


@contextlib.contextmanager
def _redis_url(config: Config, exclusive: bool) -> Iterator[str]:
    """The configured Redis, or the embedded one: started here, or (admin commands) joined.

    ``exclusive`` is ``serve``: it owns the embedded redis-server and keeps it alive (restarted
    when it dies) from this process, the parent of any workers."""
    if config.redis_url is not None:
        yield config.redis_url
        return
    server = _embedded_redis(config)
    if not exclusive and server.is_answering():
        yield server.url  # a running `tempalias serve` owns it
        return
    server.start()
    log.info("embedded redis-server started on %s", server.unix_path)
    if exclusive:
        server.keep_alive()
    try:
        yield server.url
    finally:
        server.stop()


def _open_store(url: str, config: Config) -> AliasStore:
    """The alias store on ``url``: the store's timeout, the length of the aliases' ids and the
    shape of the bit set of ids ever handed out, and the password of an operator's Redis (the
    embedded one has none)."""
    password = config.redis_password if config.redis_url else None
    durability = Durability(config.redis_wait_replicas,
                            min(config.redis_wait_timeout, config.redis_timeout / 2))
    return AliasStore(connect(url, config.redis_timeout, password=password),
                      id_length=config.id_length, durability=durability,
                      retired_ids_per_layer=config.retired_ids_per_layer,
                      retired_ids_error=config.retired_ids_error)


@contextlib.contextmanager
def _store(config: Config, exclusive: bool = False) -> Iterator[AliasStore]:
    with _redis_url(config, exclusive) as url:
        store = _open_store(url, config)
        try:
            yield store
        finally:
            store.close()


@contextlib.contextmanager
def _aliases(config: Config) -> Iterator[AliasService]:
    """The use cases for the operator: no abuse policy, who owns the store needs none."""
    with _store(config) as store:
        yield AliasService.from_settings(config.section("aliases"), store, policy=None)


@contextlib.contextmanager
def _domains(config: Config) -> Iterator[DomainService]:
    """The custom-domain use cases for the operator: no token, no abuse policy. The TXT values
    are those of the service with the same secret (``TEMPALIAS_SRS_SECRET`` or DATA_DIR's)."""
    from tempalias.service import domain_service, domain_store_of

    with _store(config) as store:
        yield domain_service(config, domain_store_of(config, store), policy=None)


def _print_records(records) -> None:
    print("records to publish:")
    for record in records:
        print(f"  {record.name}. {record.type} {record.value}")


def cmd_domain(config: Config, args: argparse.Namespace) -> int:
    with _domains(config) as domains:
        if args.action == "add":
            registration = domains.register(args.domain)
            print(f"domain:  {domain_to_unicode(registration.domain)}")
            print("status:  pending")
            print(f"token:   {registration.token}")
            print(f"expires: {iso_utc(registration.expires_ms)} unless verified")
            _print_records(registration.records)
        elif args.action == "verify":
            result = domains.verify_as_operator(args.domain)
            shown = domain_to_unicode(result.domain)
            if not result.ok:
                print(f"{shown}: {result.status}, "
                      + ("DNS did not answer; try again" if result.transient
                         else "DNS records not ready"), file=sys.stderr)
                for problem in result.problems:
                    print(f"  {problem}", file=sys.stderr)
                return 3 if result.transient else 1
            print(f"{shown}: active")
        elif args.action == "show":
            print(json.dumps(domains.show_as_operator(args.domain).summary(), indent=2,
                             ensure_ascii=False))
        elif args.action == "remove":
            live = domains.remove_as_operator(args.domain)
            print(f"erased {args.domain.lower()} with {live} live alias"
                  f"{'es' if live != 1 else ''}")
        else:  # recheck
            outcomes = domains.recheck_due()
            for name, outcome in sorted(outcomes.items()):
                print(f"{domain_to_unicode(name)}: {outcome}")
            print(f"checked {len(outcomes)} domain{'s' if len(outcomes) != 1 else ''} due")
    return 0


def _print_json(body: dict) -> None:
    """``--json``: one object on one line of stdout, for a script to read."""
    print(json.dumps(body, ensure_ascii=False))


def _record_json(record, status=None) -> dict:
    """A record as the REST API's domains show one (type, name, value), with why it is there and,
    when it was looked up, what DNS holds."""
    body = {"type": record.type, "name": record.name, "value": record.value, "why": record.why}
    if status is not None:
        body.update(state=status.state, found=list(status.found))
    return body


def cmd_dns_records(config: Config, args: argparse.Namespace) -> int:
    """The records of ``dnsrecords.expected`` as zone-file lines, each with what DNS holds: exit
    0 all present, 1 some missing or different, 2 bad input, 3 DNS did not answer."""
    from tempalias import dnsrecords
    from tempalias.dkimkeys import DkimKeyError, load_or_create_keys
    from tempalias.resolver import make_resolver

    try:
        domain = parse_domain_name(args.domain)
        spf_include = (dnsrecords.spf_include_name(args.spf_include) if args.spf_include
                       else None)
        keys = load_or_create_keys(config.section("signing"), config.data_dir)
    except (ValueError, DkimKeyError) as exc:  # InvalidAddress is a ValueError
        print(f"tempalias: {exc}", file=sys.stderr)
        return 2
    # the host our MX names: as for custom domains (service.domain_service), the banner's
    mx_host = config.mx_hostname or config.banner_hostname or config.primary_domain
    records = dnsrecords.expected(domain, keys, mx_host, spf_include)
    if args.no_check:
        if args.json:
            _print_json({"domain": domain, "records": [_record_json(r) for r in records]})
            return 0
        for record in records:
            print(f"; {record.why}\n{dnsrecords.zone_text(record)}\n")
        return 0
    results = dnsrecords.check(records, make_resolver(config.dns_servers, config.dns_timeout))
    if args.json:
        _print_json({"domain": domain,
                     "records": [_record_json(record, status) for record, status in results]})
    for record, status in ([] if args.json else results):
        print(f"; [{status.state}] {record.why}")
        for found in status.found:
            print(f";   published instead: {found}")
        print(f"{dnsrecords.zone_text(record)}\n")
    states = {status.state for _, status in results}
    present = sum(status.state == dnsrecords.PRESENT for _, status in results)
    summary = f"{domain_to_unicode(domain)}: {present} of {len(results)} records present"
    if args.json:  # the exit status says the rest; stdout stays one object
        return 3 if dnsrecords.UNKNOWN in states else 0 if states == {dnsrecords.PRESENT} else 1
    if dnsrecords.UNKNOWN in states:
        print(f"{summary}; DNS did not answer for some, try again later", file=sys.stderr)
        return 3
    if states != {dnsrecords.PRESENT}:
        print(f"{summary}; publish the others as shown", file=sys.stderr)
        return 1
    print(summary)
    return 0


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    from tempalias.dkimkeys import DkimKeyError, load_or_create_keys
    from tempalias.janitor import migrate_schema
    from tempalias.service import Service, write_ready_file
    from tempalias.workers import WorkerSupervisor, default_worker_count

    try:  # made (or checked) once, here: not by each worker, nor as a traceback
        load_or_create_keys(config.section("signing"), config.data_dir)
    except DkimKeyError as exc:
        print(f"tempalias: {exc}", file=sys.stderr)
        return 2
    workers = args.workers if args.workers is not None else config.workers
    workers = workers or default_worker_count()
    metrics.use_directory(os.path.join(config.data_dir, "metrics"))  # before anything counts
    if workers == 1:
        with _store(config, exclusive=True) as store:
            migrate_schema(store)  # before any worker serves
            service = Service(config, store)  # its ports first: a taken one is the error shown
            with _metrics_server(config, store) as server:
                service.start()
                if args.ready_file:
                    write_ready_file(args.ready_file, {**service.ports(), **_port_of(server)})
                log.info("ready: domains %s", ", ".join(config.domains))
                service.serve_until_signalled()
        return 0

    with _redis_url(config, exclusive=True) as url:
        store = _open_store(url, config)  # the parent's: the migration, the live-alias gauge
        try:
            migrate_schema(store)  # before any worker serves
        except BaseException:
            store.close()
            raise

        inherited: list = []  # the parent's metrics server, which a forked worker must forget

        def worker_main(sockets) -> int:
            for server in inherited:
                server.forget()
            store = _open_store(url, config)
            try:
                service = Service(config, store, sockets)
                service.start()
                service.serve_until_signalled()
            finally:
                store.close()
            return 0

        supervisor = WorkerSupervisor(config.http_listen, config.smtp_listen,
                                      config.drain_seconds, workers, worker_main,
                                      on_exit=metrics.worker_exited)
        try:
            with _metrics_server(config, store) as server:
                inherited += [server] if server else []
                supervisor.start()
                if args.ready_file:
                    write_ready_file(args.ready_file, {**supervisor.ports(), **_port_of(server)})
                log.info("ready: %d workers, domains %s", workers, ", ".join(config.domains))
                return supervisor.run()
        finally:
            store.close()


@contextlib.contextmanager
def _metrics_server(config: Config, store: AliasStore) -> Iterator["metrics.MetricsServer | None"]:
    """``/metrics`` served from this process (the workers' parent, or the one process), the
    live-alias gauge read on ``store``; None when it is off. A worker forked meanwhile must
    ``forget`` it."""
    if config.metrics_listen is None:
        yield None
        return
    from tempalias.listeners import make_listener
    from tempalias.service import stats_store_of

    server = metrics.MetricsServer(make_listener(config.metrics_listen),
                                   metrics.LiveAliases(stats_store_of(store)))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _port_of(server: "metrics.MetricsServer | None") -> dict[str, int]:
    """The metrics port for the ready file, if it serves."""
    return {"metrics": server.port} if server else {}


def cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    """Every step of the migration to the store's schema, whether or not one ran before: after
    the last node of an older tempalias has stopped, anything it wrote meanwhile is moved over."""
    with _store(config) as store:
        print(f"tempalias migrate: {Migration(store).run()}")
    return 0


def cmd_create(config: Config, args: argparse.Namespace) -> int:
    try:  # before a store is joined or started: a typo costs no redis-server
        order = AliasRules.from_settings(config.section("aliases")).order(
            args.target, args.days, args.uses)
    except InvalidOrder as exc:
        print(f"tempalias: {exc.description}", file=sys.stderr)
        return 2
    from tempalias.service import stats_store_of

    with _store(config) as store:
        aliases = AliasService.from_settings(config.section("aliases"), store, policy=None)
        created = aliases.create(order.target, order.days, order.uses)
        metrics.alias_created("cli", False, created.view.alias.expires_ms)
        metrics.StatsFlusher(stats_store_of(store)).flush()  # this process ends now
    if args.json:  # the fields of POST /api/v1/aliases
        _print_json({**created.view.summary(), "token": created.token})
        return 0
    print(f"address: {created.view.address}")
    print(f"token:   {created.token}")
    print(f"expires: {iso_utc(created.view.alias.expires_ms)}")
    print(f"uses:    {'unlimited' if order.uses is None else order.uses}")
    return 0


def cmd_stats(config: Config, args: argparse.Namespace) -> int:
    """What every process of every node counted (store/stats.py): the last hour and day."""
    import time

    from tempalias.service import stats_store_of

    with _store(config) as store:
        stats = stats_store_of(store)
        now = time.time()
        hour, day = stats.windows(now, (1, 24))
        live = stats.live_upper_bound(now)
    report = {"live_aliases_at_most": live,
              "last_hour": _stats_summary(hour.counts), "last_day": _stats_summary(day.counts)}
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    print(f"live aliases:   at most {live} (created, last day not passed; "
          "revoked or used up early still counted)")
    for name, window in (("last hour", report["last_hour"]), ("last day", report["last_day"])):
        print(f"{name}:")
        print(f"  aliases created:    {window['aliases_created']}")
        print(f"  messages forwarded: {window['messages_forwarded']}")
        refused = ", ".join(f"{reason} {count}" for reason, count in window["refused"].items())
        print(f"  refused:            {refused or 'none'}")
    return 0


def _stats_summary(counts: dict[str, int]) -> dict:
    """An hour's or a day's fields as ``tempalias stats`` shows them."""
    return {
        "aliases_created": counts.get("created", 0),
        "messages_forwarded": sum(count for field, count in counts.items()
                                  if field.startswith("forwarded-")),
        "transactions": {field: count for field, count in sorted(counts.items())
                         if field != "created" and not field.startswith("forwarded-")},
        "refused": {field: count for field, count in sorted(counts.items())
                    if field.startswith(("refused-", "tempfail-"))},
    }


def cmd_show(config: Config, args: argparse.Namespace) -> int:
    with _aliases(config) as aliases:
        view = aliases.show_as_operator(args.id)
    if args.json:  # the fields of GET /api/v1/aliases/{id}
        _print_json({**view.summary(), "delivered": view.alias.delivered, "active": view.active})
        return 0
    print(json.dumps({**view.summary(), "delivered": view.alias.delivered}, indent=2))
    return 0


def cmd_revoke(config: Config, args: argparse.Namespace) -> int:
    with _aliases(config) as aliases:
        aliases.revoke_as_operator(args.id)
    print(f"revoked and erased {args.id.lower()}")
    return 0


def cmd_purge(config: Config, args: argparse.Namespace) -> int:
    with _aliases(config) as aliases:
        removed = aliases.purge()
    print(f"purged {removed} ended alias{'es' if removed != 1 else ''}")
    return 0


def version() -> str:
    """The installed distribution's version; from a checkout that was never installed (``make
    run``, the tests), the package's own ``__version__``."""
    from importlib import metadata

    import tempalias

    try:
        return metadata.version("tempalias")
    except metadata.PackageNotFoundError:
        return tempalias.__version__


def _plain(text: str) -> str:
    """A docstring's line as help: without reStructuredText's ````literal```` quotes."""
    return text.replace("``", "")


def _json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true",
                        help=f"print {what} as one JSON object on stdout")


def run_checks(config: Config) -> list:
    """Every check of ``tempalias/checks.py`` on this configuration, in the order an operator
    mends them: the store, the public URL, the smarthost, the certificate, the block lists, each
    domain's records.
    Only what cannot be checked (a DKIM key that does not load) stops the domains' part."""
    from tempalias import checks, dnsrecords
    from tempalias.dkimkeys import DkimKeyError, load_or_create_keys
    from tempalias.resolver import make_resolver

    results = [checks.Result(checks.OK, "the configuration parses")]
    if config.redis_url is None:
        embedded = _embedded_redis(config)
        url = embedded.url if embedded.is_answering() else None
    else:
        url = config.redis_url
    results += checks.redis_server(url, config.redis_timeout,
                                   config.redis_password if config.redis_url else None)
    results += checks.public_url(config.public_url, config.http_listen.host,
                                 config.http_listen.port)
    results += checks.smarthost(config.section("smarthost"),
                                config.banner_hostname or config.primary_domain)
    results += checks.tls_certificate(config.tls_cert, config.tls_key)
    results += checks.rbl_zones(config.rbl_zones,
                                make_resolver(config.dns_servers, config.rbl_timeout),
                                config.rbl_timeout)
    try:
        keys = load_or_create_keys(config.section("signing"), config.data_dir)
    except DkimKeyError as exc:
        return results + [checks.Result(checks.FAIL, f"DKIM key: {exc}",
                                        "correct TEMPALIAS_DKIM_KEY")]
    mx_host = config.mx_hostname or config.banner_hostname or config.primary_domain
    for domain in config.domains:
        if domain.endswith(".localhost"):  # RFC 6761: this machine's own; no zone to publish in
            results.append(checks.Result(checks.OK, f"{domain}: local only, no DNS records"))
            continue
        results += checks.domain_records(
            domain, dnsrecords.expected(domain, keys, mx_host),
            make_resolver(config.dns_servers, config.dns_timeout))
    return results


def print_checks(results: list, as_json: bool) -> int:
    """One line per check (or one JSON object); exit 1 on any FAIL, else 0."""
    from tempalias import checks

    failed = checks.failed(results)
    if as_json:
        _print_json({"ok": not failed, "checks": [result.as_json() for result in results]})
    else:
        for result in results:
            print(result.line())
    return 1 if failed else 0


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    return print_checks(run_checks(config), args.json)


def cmd_extension(config: Config, args: argparse.Namespace) -> int:
    """The browser extension for this server (tempalias/webextension.py): unpacked into --out,
    zipped into --zip. It calls the public URL, so that URL must be one a browser can reach."""
    from pathlib import Path

    from tempalias import webextension
    from tempalias.web.frontend import configured_public_url, page_settings

    base = configured_public_url(config.section("http"))
    if base is None:
        print("tempalias: set TEMPALIAS_PUBLIC_URL, the URL browsers reach this server at "
              f"(TEMPALIAS_HTTP_LISTEN {config.http_listen} names none)", file=sys.stderr)
        return 2
    rules = AliasRules.from_settings(config.section("aliases"))
    files = webextension.extension_files(base, page_settings(rules, base), args.browser)
    written = []
    try:
        if args.out:
            webextension.write_directory(files, Path(args.out))
            written.append(f"{args.out} (unpacked)")
        if args.zip:
            webextension.write_zip(files, Path(args.zip))
            written.append(args.zip)
    except webextension.OutputRefused as exc:
        print(f"tempalias: {exc}", file=sys.stderr)
        return 2
    print(f"wrote the {args.browser} extension for {base}: {', '.join(written)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tempalias",
                                     description=_plain(__doc__.splitlines()[0]))
    parser.add_argument("--version", action="version", version=f"tempalias {version()}",
                        help="print the version and exit")
    parser.add_argument("--config", metavar="PATH", help="INI file with a [tempalias] section")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the HTTP API and the SMTP proxy")
    serve.add_argument("--ready-file", metavar="PATH",
                       help="write {pid, http, smtp, metrics} as JSON here once listening")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="processes sharing the ports (default TEMPALIAS_WORKERS; 0: one per CPU)")
    serve.set_defaults(run=cmd_serve)
    create = commands.add_parser("create", help="create an alias and print its address and token")
    create.add_argument("--target", required=True, metavar="ADDRESS",
                        help="the mailbox the alias forwards to")
    create.add_argument("--days", type=int, metavar="N",
                        help="days the alias lives (default TEMPALIAS_DEFAULT_DAYS)")
    create.add_argument("--uses", type=int, metavar="N",
                        help="messages it carries before it ends (default: no limit)")
    _json_flag(create, "the alias with its token, as the REST API does,")
    create.set_defaults(run=cmd_create)
    show = commands.add_parser("show", help="show an alias (operator view, no token needed)")
    show.add_argument("id", help="the alias's id (or local@domain in a custom domain)")
    _json_flag(show, "the alias, as the REST API does,")
    show.set_defaults(run=cmd_show)
    revoke = commands.add_parser("revoke", help="revoke an alias and erase its data")
    revoke.add_argument("id", help="the alias's id (or local@domain in a custom domain)")
    revoke.set_defaults(run=cmd_revoke)
    stats = commands.add_parser(
        "stats", help="live aliases, creations, forwards and refusals of the last hour and day",
        description="the counts every process of every node adds to Redis every few seconds: "
                    "aliases created, messages forwarded, transactions by outcome and refusals "
                    "by reason, in the last hour and the last 24; and an upper bound of the "
                    "live aliases")
    stats.add_argument("--json", action="store_true", help="print them as JSON")
    stats.set_defaults(run=cmd_stats)
    purge = commands.add_parser("purge", help="erase ended aliases now (for cron or a timer)")
    purge.set_defaults(run=cmd_purge)
    migrate = commands.add_parser(
        "migrate", help="bring Redis's keys to this version's schema (serve does it once)",
        description="fold an older tempalias's id reservations into the retired-id bit set, "
                    "rewrite its alias hashes compactly under their shards' tags and drop "
                    "ta:ends; idempotent, safe beside running nodes of this version; prints what "
                    "it did")
    migrate.set_defaults(run=cmd_migrate)
    domain = commands.add_parser(
        "domain", help="custom domains (operator view, no token needed)",
        description="add: register DOMAIN, print its token and the DNS records to publish; "
                    "verify: look the records up, and activate the registration whose records "
                    "are published; show: its status; remove: erase it with every alias in it; "
                    "recheck: check every active domain that is due now, as the service does")
    domain.add_argument("action", choices=("add", "verify", "show", "remove", "recheck"),
                        help="what to do (see above)")
    domain.add_argument("domain", nargs="?", help="the domain (not for recheck)")
    domain.set_defaults(run=cmd_domain)
    dns_records = commands.add_parser(
        "dns-records", help="the DNS records a mail domain publishes (MX, SPF, DKIM, DMARC)",
        description="print the records DOMAIN publishes so that the mail tempalias sends is "
                    "believed, as zone-file lines, each with what DNS holds for it; makes the "
                    "DKIM key in the data directory when there is none. Exit 0: all present; "
                    "1: some missing or different; 2: bad input; 3: DNS did not answer")
    dns_records.add_argument("domain", help="the mail domain")
    dns_records.add_argument("--spf-include", metavar="NAME",
                             help="the smarthost's SPF record, to include in the domain's")
    dns_records.add_argument("--no-check", action="store_true",
                             help="print the records without looking them up")
    _json_flag(dns_records, "the records and what DNS holds for each")
    dns_records.set_defaults(run=cmd_dns_records)
    check = commands.add_parser(
        "check", help="check the settings, Redis, the smarthost, TLS, block lists and DNS",
        description="one line per check: OK, WARN (look at it) or FAIL (mail stops or aliases "
                    "are lost), what was found and what to do. Exit 0 without a FAIL, 1 with one")
    _json_flag(check, "the results")
    check.set_defaults(run=cmd_check)
    extension = commands.add_parser(
        "extension", help="write the browser extension, configured for this server",
        description="the browser extension that puts a new alias into any sign-up form and "
                    "remembers the aliases it made, calling this server's public URL "
                    "(TEMPALIAS_PUBLIC_URL, else http://HTTP_LISTEN): unpacked into a "
                    "directory to load, or packaged as a zip, or both (see docs/extension.md)")
    extension.add_argument("--out", metavar="DIR",
                           help="write it unpacked here: a new or empty directory, or an "
                                "earlier output, which is replaced")
    extension.add_argument("--zip", metavar="FILE", help="write it packaged as this zip file")
    extension.add_argument("--browser", choices=BROWSERS, default="chromium", metavar="BROWSER",
                           help="the browser it is for: chromium (the default) or firefox")
    extension.set_defaults(run=cmd_extension)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "domain" and (args.domain is None) != (args.action == "recheck"):
        parser.error("domain recheck takes no DOMAIN; every other action takes one")
    if args.command == "extension" and not (args.out or args.zip):
        parser.error("extension writes to --out DIR, --zip FILE or both: name one")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        if args.command == "check":  # the first check's result, not a refusal to check
            from tempalias.checks import FAIL, Result

            return print_checks([Result(FAIL, f"the configuration does not parse: {exc}",
                                        "correct that setting")], args.json)
        print(f"tempalias: configuration error: {exc}", file=sys.stderr)
        return 2
    logformat.configure(config.log_level, config.log_format)
    # What the format does not show is not gathered (the logging HOWTO's "Optimization"): the
    # caller's frame, thread and multiprocessing names cost a tenth of a request's CPU otherwise.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    try:
        return args.run(config, args)
    except AliasNotFound as exc:
        print(f"tempalias: no live alias {str(exc.args[0]).lower()!r}", file=sys.stderr)
        return 1
    except DomainNotFound as exc:
        print(f"tempalias: no domain or registration {str(exc.args[0]).lower()!r}",
              file=sys.stderr)
        return 1
    except DomainTaken as exc:
        print(f"tempalias: {str(exc.args[0]).lower()} is already verified", file=sys.stderr)
        return 1
    except InvalidOrder as exc:
        print(f"tempalias: {exc.description}", file=sys.stderr)
        return 2
    except (EmbeddedRedisError, StoreUnavailable, OSError) as exc:
        print(f"tempalias: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
