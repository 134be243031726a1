"""Typed configuration: defaults, then an optional INI file, then ``TEMPALIAS_*`` variables.

Every setting is declared once in ``SETTINGS`` with its parser, so the INI file, the
environment and the settings table (docs/configuration.md) cannot drift apart. A bad value
raises ``ConfigError`` whose message is one line naming the setting; the CLI prints it and exits
non-zero.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from tempalias.addresses import InvalidAddress, domain_to_ascii, parse_address
from tempalias.store.connections import BadRedisUrl, parse_redis_url

ENV_PREFIX = "TEMPALIAS_"
INI_SECTION = "tempalias"


class ConfigError(Exception):
    """A setting has a value the service cannot run with."""


@dataclass(frozen=True)
class Listen:
    """A ``host:port`` to bind; port 0 asks the kernel for a free one (tests do)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Rate:
    """A token bucket: ``count`` at once, refilled evenly so that ``count`` per ``seconds``."""

    count: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds:g}s"


# RFC 6761 reserves .localhost for loopback: a name no one else can own, that browsers and
# systemd's resolver send to 127.0.0.1, and that has the two labels a mail domain needs.
DEFAULT_DOMAIN = "tempalias.localhost"


# --- value parsers: each takes the raw string and returns the typed value or raises ValueError


def _number_between(kind: Callable[[str], Any], what: str, low: Any,
                    high: Any) -> Callable[[str], Any]:
    """A number of ``kind`` (int, float) from ``low`` to ``high``; ``what`` names it in errors."""
    def parse(raw: str) -> Any:
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ValueError(f"must be {what} from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"must be {what} from {low} to {high}")
        return value

    return parse


def _int_between(low: int, high: int) -> Callable[[str], int]:
    return _number_between(int, "a whole number", low, high)


def _fraction_between(low: float, high: float) -> Callable[[str], float]:
    return _number_between(float, "a number", low, high)


def _seconds(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not 0 < value <= 86400:
        raise ValueError("must be a number of seconds above 0 and at most 86400")
    return value


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def parse_domain(raw: str) -> str:
    """A mail domain, lower-cased, in A-label form by IDNA 2008 (so ``bücher.example`` works and
    ``zielß.example`` stays itself), as ``addresses`` converts the domains of addresses."""
    try:
        name = domain_to_ascii(raw.strip().rstrip("."))
    except InvalidAddress as exc:
        raise ValueError(str(exc)) from None
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{raw.strip()!r} is not a valid domain name")
    return name


def _mail_domain(raw: str) -> str:
    """A domain we take mail for: what SMTP accepts in a recipient, so every alias can get mail.

    A single-label name such as ``localhost`` is refused here, at start-up, rather than by the
    first RCPT TO that names an alias at it.
    """
    from tempalias.addresses import InvalidAddress, parse_domain_name

    name = raw.strip()
    try:
        return parse_domain_name(name)
    except InvalidAddress as exc:
        hint = "" if "." in name else f"; for mail on this machine use {DEFAULT_DOMAIN}"
        raise ValueError(f"{exc}{hint}") from None


def _domains(raw: str) -> tuple[str, ...]:
    names = [part for part in raw.split(",") if part.strip()]
    if not names:
        raise ValueError("must name at least one domain")
    return tuple(dict.fromkeys(_mail_domain(part) for part in names))


def parse_listen(raw: str) -> Listen:
    """``host:port`` or ``[v6]:port``; the host must be an IP address or ``localhost``."""
    text = raw.strip()
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", text)
    if not match:
        raise ValueError(f"{text!r} is not host:port (use [addr]:port for IPv6)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host):
                raise ValueError(f"{host!r} is not an address or host name") from None
    return Listen(host, port)


def _optional_listen(raw: str) -> Listen | None:
    return parse_listen(raw) if raw.strip() else None


def _redis_url(raw: str) -> str | None:
    url = raw.strip()
    if not url:
        return None
    try:
        parse_redis_url(url)
    except BadRedisUrl as exc:
        raise ValueError(str(exc)) from None
    return url


def _wait_replicas(raw: str) -> int | None:
    """``auto`` (None) or a count of replicas."""
    if raw.strip().lower() == "auto":
        return None
    try:
        return _int_between(0, 16)(raw)
    except ValueError:
        raise ValueError("must be auto or a whole number from 0 to 16") from None


_PERIOD_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(low: float, high: float) -> Callable[[str], float]:
    """Seconds, or a number with a unit (``90s``, ``30m``, ``24h``, ``3d``), from ``low`` to
    ``high`` seconds."""
    def parse(raw: str) -> float:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", raw.strip().lower())
        if not match:
            raise ValueError("must be a duration: seconds, or a number with s, m, h or d (24h)")
        value = float(match.group(1)) * _PERIOD_UNITS[match.group(2)]
        if not low <= value <= high:
            raise ValueError(f"must be from {low:g} to {high:g} seconds")
        return value

    return parse


def _optional_domain(raw: str) -> str | None:
    return parse_domain(raw) if raw.strip() else None


def _text(raw: str) -> str:
    return raw.strip()


def _postmaster(raw: str) -> str | None:
    text = raw.strip()
    if not text:
        return None
    try:
        return str(parse_address(text))
    except InvalidAddress as exc:
        raise ValueError(f"must be an email address: {exc}") from None


def _selector(raw: str) -> str:
    """A DKIM selector (RFC 6376 3.1): dot-separated DNS labels."""
    value = raw.strip().lower()
    if not re.fullmatch(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*", value):
        raise ValueError("must be DNS labels: letters, digits and dashes, separated by dots")
    return value


def _optional_text(raw: str) -> str | None:
    return raw.strip() or None


def _public_url(raw: str) -> str | None:
    url = raw.strip().rstrip("/")
    if not url:
        return None
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
        raise ValueError("must be an http:// or https:// URL without query or fragment")
    return url


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return value

    return parse


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
    return level


def parse_rate(raw: str) -> Rate | None:
    """``COUNT/PERIOD`` (period in s, m, h or d, e.g. ``5/50s``, ``20/1d``); ``0`` switches it off."""
    text = raw.strip().lower()
    if text in ("0", "off"):
        return None
    match = re.fullmatch(r"(\d{1,9})\s*/\s*(\d+(?:\.\d+)?)?\s*([smhd]?)", text)
    if not match or int(match.group(1)) == 0:
        raise ValueError("must be COUNT/PERIOD such as 5/50s, 100/1h or 20/1d, or 0 for off")
    seconds = float(match.group(2) or 1) * _PERIOD_UNITS[match.group(3)]
    if not 0 < seconds <= 366 * 86400:
        raise ValueError("the period must be above 0 and at most 366 days")
    return Rate(int(match.group(1)), seconds)


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False)
                     for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"must be comma-separated CIDR networks: {exc}") from None


def _dns_servers(raw: str) -> tuple[Listen, ...]:
    """``host`` or ``host:port`` (``[v6]:port``), IP addresses only; port 53 by default."""
    servers = []
    for part in (part.strip() for part in raw.split(",")):
        if not part:
            continue
        try:
            ipaddress.ip_address(part)
            servers.append(Listen(part, 53))
            continue
        except ValueError:
            pass
        server = parse_listen(part)
        ipaddress.ip_address(server.host)  # a resolver must be an address, not a name
        servers.append(server)
    return tuple(servers)


def _zones(raw: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(parse_domain(part) for part in raw.split(",") if part.strip()))


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ValueError("must be yes or no")
    return value in ("1", "true", "yes", "on")


def setting(default: Any, parse: Callable[[str], Any], section: str, doc: str) -> Any:
    """A Config field with everything else about it: how its text is parsed, which part of the
    service uses it (``Config.section``), and its one-line doc for the settings table and the INI file."""
    return field(default=default, metadata={"parse": parse, "section": section, "doc": doc})


SECTIONS = {  # the parts of the service, each with the settings it uses
    "store": "Redis, where everything is kept",
    "aliases": "the aliases handed out",
    "service": "the process: workers, data directory, logging, upkeep",
    "http": "the HTTP API and the page",
    "smtp": "the SMTP proxy",
    "smarthost": "where forwarded mail is handed on",
    "abuse": "block lists, trusted networks and rate limits",
    "dns": "the resolver every DNS look-up goes through",
    "domains": "custom domains brought by their owners",
    "signing": "DKIM keys and ARC seals on the mail that leaves",
}


@dataclass(frozen=True)
class Config:
    """Every setting, each declared once, here; the rest of this module and the docs derive."""

    redis_url: str | None = setting(None, _redis_url, "store",
        "Redis to keep aliases in; unset: a private redis-server is started")
    domains: tuple[str, ...] = setting((DEFAULT_DOMAIN,), _domains, "aliases",
        "comma-separated mail domains; the first is used for new aliases; the default is local only")
    http_listen: Listen = setting(Listen("127.0.0.1", 8080), parse_listen, "http",
        "address:port of the HTTP API and frontend")
    smtp_listen: Listen = setting(Listen("127.0.0.1", 2525), parse_listen, "smtp",
        "address:port of the SMTP proxy")
    smarthost: Listen | None = setting(None, _optional_listen, "smarthost",
        "host:port that forwarded mail is handed to")
    data_dir: str = setting("./var", _text, "service",
        "directory for the embedded Redis, secrets and the Maildir")
    max_days: int = setting(60, _int_between(1, 3650), "aliases",
        "longest lifetime of an alias, in days")
    max_uses: int = setting(100, _int_between(1, 1_000_000), "aliases",
        "largest message count an alias may be given")
    default_days: int = setting(7, _int_between(1, 3650), "aliases",
        "lifetime of an alias created without days")
    id_length: int = setting(6, _int_between(4, 32), "aliases",
        "starting length of new alias ids")
    retired_ids_per_layer: int = setting(1_000_000, _int_between(16, 100_000_000), "aliases",
        "ids one layer of the bit set of ids ever handed out holds; a layer takes its whole size "
        "at once (1.2 MB at the default), and each full one adds about RETIRED_IDS_ERROR to the "
        "draws refused: make it hold a long while of new aliases")
    retired_ids_error: float = setting(0.01, _fraction_between(1e-6, 0.5), "aliases",
        "false-positive rate of one layer of that bit set (a new id refused as used: one more "
        "draw); it costs -ln(rate)/ln(2)² bits an id: 9.6 bits (1.2 bytes) at 0.01, 14.4 at 0.001")
    http_max_body: int = setting(16384, _int_between(256, 1_048_576), "http",
        "largest accepted HTTP request body, bytes")
    drain_seconds: float = setting(10.0, _seconds, "service",
        "how long SIGTERM waits for in-flight work")
    redis_password: str | None = setting(None, _optional_text, "store",
        "Redis password when TEMPALIAS_REDIS_URL names none: kept out of process lists and URLs; "
        "a password in the URL wins")
    redis_timeout: float = setting(3.0, _seconds, "store",
        "budget of one Redis operation, retries included, seconds")
    redis_wait_replicas: int | None = setting(None, _wait_replicas, "store",
        "replicas that must have a new alias, a held use or a counted use before it counts "
        "(WAIT); auto: 1 when the primary has a replica connected, else 0")
    redis_wait_timeout: float = setting(1.0, _seconds, "store",
        "how long a write waits for those replicas, seconds (at most half of "
        "TEMPALIAS_REDIS_TIMEOUT is used); then a creation answers 503, a delivery 4xx")
    log_level: str = setting("INFO", _log_level, "service",
        "DEBUG, INFO, WARNING or ERROR")
    log_format: str = setting("text", _one_of("text", "json"), "service",
        "text, or json: one object a line with the fields time, level, logger, event, pid and "
        "for SMTP lines client, outcome, queue_id")
    workers: int = setting(0, _int_between(0, 256), "service",
        "worker processes sharing the ports; 0: one per CPU")
    metrics_listen: Listen | None = setting(Listen("127.0.0.1", 9325), _optional_listen, "service",
        "host:port where Prometheus scrapes /metrics (never the public HTTP port); empty: off")
    purge_interval: float = setting(300.0, _seconds, "service",
        "seconds between sweeps of ended aliases out of Redis and checks of custom domains due")
    postmaster: str | None = setting(None, _postmaster, "smtp",
        "where mail to postmaster@ our domains goes; unset: the Maildir, or refused")
    public_url: str | None = setting(None, _public_url, "http",
        "the URL people reach the frontend at; default http://HTTP_LISTEN")
    banner_hostname: str | None = setting(None, _optional_text, "smtp",
        "host name in the SMTP greeting; default the first domain")
    max_message_size: int = setting(25 * 1024 * 1024, _int_between(1024, 1 << 30), "smtp",
        "largest message accepted, bytes")
    tls_cert: str | None = setting(None, _optional_text, "smtp",
        "PEM certificate chain for STARTTLS; unset: no STARTTLS")
    tls_key: str | None = setting(None, _optional_text, "smtp",
        "PEM private key for STARTTLS")
    srs_secret: str | None = setting(None, _optional_text, "smtp",
        "SRS HMAC secret; unset: generated once into DATA_DIR")
    smtp_max_connections: int = setting(1000, _int_between(1, 1_000_000), "smtp",
        "concurrent SMTP connections")
    smtp_idle_timeout: float = setting(300.0, _seconds, "smtp",
        "seconds an SMTP client may take per command")
    smtp_data_timeout: float = setting(600.0, _seconds, "smtp",
        "seconds an SMTP client may take for a whole DATA")
    smtp_max_bad_commands: int = setting(10, _int_between(1, 1000), "smtp",
        "bad commands before 421 and close")
    smtp_max_recipients: int = setting(100, _int_between(1, 1000), "smtp",
        "recipients accepted per message")
    smtp_max_bad_recipients: int = setting(5, _int_between(1, 1000), "smtp",
        "refused recipients per connection before each RCPT is delayed; twice as many: 421 and close")
    smtp_bad_recipient_delay: float = setting(2.0, _seconds, "smtp",
        "seconds each RCPT waits once the bad ones are over the limit")
    smtp_transaction_timeout: float = setting(120.0, _seconds, "smtp",
        "seconds from the first accepted RCPT to DATA; then the held uses are given back (421)")
    srs_max_reports: int = setting(5, _int_between(1, 1000), "smtp",
        "delivery reports one SRS return address carries")
    smarthost_timeout: float = setting(60.0, _seconds, "smarthost",
        "timeout of every smarthost connect and reply, seconds")
    smarthost_tls: str = setting("off", _one_of("off", "opportunistic", "required"), "smarthost",
        "STARTTLS to the smarthost")
    smarthost_user: str | None = setting(None, _optional_text, "smarthost",
        "AUTH user name at the smarthost")
    smarthost_password: str | None = setting(None, _optional_text, "smarthost",
        "AUTH password at the smarthost")
    smarthost_idle_seconds: float = setting(10.0, _seconds, "smarthost",
        "how long an idle smarthost connection is kept")
    smarthost_max_messages: int = setting(100, _int_between(1, 100_000), "smarthost",
        "messages one smarthost connection carries before it is replaced")
    rbl_zones: tuple[str, ...] = setting((), _zones, "abuse",
        "comma-separated DNS block lists to check clients in; empty: none")
    dns_servers: tuple[Listen, ...] = setting((), _dns_servers, "dns",
        "resolvers of every DNS look-up: block lists, custom-domain checks (ip or ip:port); "
        "empty: system's")
    dns_timeout: float = setting(5.0, _seconds, "dns",
        "seconds one check of a custom domain's DNS records may take, both look-ups together")
    rbl_timeout: float = setting(2.0, _seconds, "abuse",
        "seconds one RBL look-up may take")
    rbl_fail_closed: bool = setting(False, _boolean, "abuse",
        "yes: an RBL timeout or SERVFAIL refuses (4xx/503)")
    trusted_networks: tuple[IPNetwork, ...] = setting(
        (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128")), _networks, "abuse",
        "CIDR list never RBL-checked nor rate-limited")
    trusted_proxies: tuple[IPNetwork, ...] = setting((), _networks, "abuse",
        "CIDR list whose X-Forwarded-For is believed")
    create_rate_per_ip: Rate | None = setting(Rate(5, 50.0), parse_rate, "abuse",
        "alias creations per client IP (burst/period); 0: off")
    create_daily_per_ip: Rate | None = setting(Rate(50, 86400.0), parse_rate, "abuse",
        "second, longer creation cap per client IP; 0: off")
    create_daily_per_target: Rate | None = setting(Rate(20, 86400.0), parse_rate, "abuse",
        "new aliases for one target address; 0: off")
    smtp_connections_per_ip: Rate | None = setting(Rate(60, 60.0), parse_rate, "abuse",
        "SMTP connections per client IP; 0: off")
    smtp_messages_per_ip: Rate | None = setting(Rate(100, 3600.0), parse_rate, "abuse",
        "SMTP messages per client IP; 0: off")
    smtp_concurrent_per_ip: int = setting(10, _int_between(0, 100_000), "abuse",
        "open SMTP connections per IP; 0: off")
    alias_message_rate: Rate | None = setting(Rate(30, 3600.0), parse_rate, "abuse",
        "messages one alias forwards (burst/period); 0: off")
    domain_rate_per_ip: Rate | None = setting(Rate(5, 86400.0), parse_rate, "abuse",
        "custom-domain registrations per client IP (burst/period); 0: off")
    domain_verify_rate: Rate | None = setting(Rate(30, 3600.0), parse_rate, "abuse",
        "DNS checks (verify, Check now) per custom-domain registration (burst/period); 0: off")
    domain_daily_aliases: int = setting(500, _int_between(0, 1_000_000), "abuse",
        "new aliases one custom domain gets per day; 0: off")
    mx_hostname: str | None = setting(None, _optional_domain, "domains",
        "host a custom domain's MX record must name; default the banner host name")
    domain_recheck: float = setting(86400.0, _duration(60, 366 * 86400), "domains",
        "how often an active custom domain's DNS records are checked again (e.g. 24h)")
    domain_grace: float = setting(259200.0, _duration(0, 366 * 86400), "domains",
        "how long a custom domain whose records are gone is suspended (mail 4xx) before it and "
        "its aliases are erased (e.g. 72h)")
    http_client_timeout: float = setting(20.0, _seconds, "http",
        "seconds each read of a request body or write of an answer may take")
    http_header_timeout: float = setting(10.0, _seconds, "http",
        "seconds for a request line and headers, however they trickle in; also keep-alive idle")
    http_max_connections: int = setting(1000, _int_between(1, 1_000_000), "http",
        "open HTTP connections per process; above it 503 and close")
    http_concurrent_per_ip: int = setting(50, _int_between(0, 1_000_000), "http",
        "open HTTP connections per client IP, per process; above it 429 and close; 0: off")
    reply_rate: Rate | None = setting(Rate(20, 3600.0), parse_rate, "abuse",
        "replies sent through one alias (N/PERIOD); they use none of its uses; empty: no limit")
    dkim_key: str | None = setting(None, _optional_text, "signing",
        "PEM file of the RSA key that signs (DKIM) and seals (ARC); empty: DATA_DIR/dkim.key, "
        "made on first start")
    dkim_selector: str = setting("tempalias", _selector, "signing",
        "DKIM selector: the key is published at SELECTOR._domainkey.DOMAIN")
    dkim_ed25519: bool = setting(False, _boolean, "signing",
        "also sign with an Ed25519 key (DATA_DIR/dkim-ed25519.key, selector SELECTOR-ed)")
    arc: bool = setting(True, _boolean, "signing",
        "check SPF, DKIM and DMARC of mail received and ARC-seal what is forwarded")

    @property
    def primary_domain(self) -> str:
        return self.domains[0]

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    def section(self, name: str) -> Any:
        """The settings one part of the service uses (``SECTIONS``), as a frozen object of that
        section's type (``HttpSettings``, ...) with the same attribute names: a component is
        given its section, not the whole Config."""
        kind = SECTION_TYPES[name]
        return kind(**{f.name: getattr(self, f.name) for f in dataclasses.fields(kind)})


def _section_type(name: str) -> type:
    """The frozen dataclass of one section, made from the Config fields that name it: the
    settings are declared once, on Config, and each section type is derived from them."""
    kind = dataclasses.make_dataclass(
        f"{name.capitalize()}Settings",
        [(f.name, f.type) for f in dataclasses.fields(Config) if f.metadata["section"] == name],
        frozen=True)
    kind.__module__ = __name__
    kind.__doc__ = f"The settings of {SECTIONS[name]} (``Config.section({name!r})``)."
    return kind


SECTION_TYPES: dict[str, type] = {name: _section_type(name) for name in SECTIONS}
# Importable by name, for annotations such as ``settings: HttpSettings``.
StoreSettings = SECTION_TYPES["store"]
AliasesSettings = SECTION_TYPES["aliases"]
ServiceSettings = SECTION_TYPES["service"]
HttpSettings = SECTION_TYPES["http"]
SmtpSettings = SECTION_TYPES["smtp"]
SmarthostSettings = SECTION_TYPES["smarthost"]
AbuseSettings = SECTION_TYPES["abuse"]
DnsSettings = SECTION_TYPES["dns"]
DomainsSettings = SECTION_TYPES["domains"]
SigningSettings = SECTION_TYPES["signing"]


@dataclass(frozen=True)
class Setting:
    name: str  # the Config field; TEMPALIAS_<NAME> in the environment, <name> in the INI file
    parse: Callable[[str], Any]
    doc: str
    section: str


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, f.metadata["parse"], f.metadata["doc"], f.metadata["section"])
    for f in dataclasses.fields(Config))



def env_name(setting: Setting) -> str:
    return ENV_PREFIX + setting.name.upper()


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the Config from defaults, the INI file at ``path`` and ``environ`` (which wins)."""
    environ = os.environ if environ is None else environ
    raw: dict[str, tuple[str, str]] = {}  # field -> (where it came from, text)
    if path is not None:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle)
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        except configparser.Error as exc:
            raise ConfigError(f"config file {path}: {exc.message.splitlines()[0]}") from None
        if parser.has_section(INI_SECTION):
            known = {setting.name for setting in SETTINGS}
            for key, value in parser.items(INI_SECTION):
                if key not in known:
                    raise ConfigError(f"{path} [{INI_SECTION}] {key}: unknown setting")
                raw[key] = (f"{path} [{INI_SECTION}] {key}", value)
    for setting in SETTINGS:
        name = env_name(setting)
        if name in environ:
            raw[setting.name] = (name, environ[name])

    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name in raw:
            where, text = raw[setting.name]
            try:
                values[setting.name] = setting.parse(text)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc} (got {text.strip()!r})") from None
    config = Config(**values)
    if "default_days" not in values:
        config = config.replace(default_days=min(Config.default_days, config.max_days))
    if config.default_days > config.max_days:
        raise ConfigError(
            f"{ENV_PREFIX}DEFAULT_DAYS: {config.default_days} is above "
            f"{ENV_PREFIX}MAX_DAYS ({config.max_days})"
        )
    if config.postmaster is not None and config.postmaster.rpartition("@")[2] in config.domains:
        raise ConfigError(f"{ENV_PREFIX}POSTMASTER: may not be at one of our own domains "
                          "(mail to it would loop)")
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError(f"{ENV_PREFIX}TLS_CERT and {ENV_PREFIX}TLS_KEY must be set together")
    if (config.smarthost_user is None) != (config.smarthost_password is None):
        raise ConfigError(
            f"{ENV_PREFIX}SMARTHOST_USER and {ENV_PREFIX}SMARTHOST_PASSWORD must be set together"
        )
    return config
