"""Configuration: defaults, INI file, environment precedence, and one clear line per bad value."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

import tempalias.config
from tempalias.addresses import parse_address
from tempalias.config import (SECTION_TYPES, SECTIONS, SETTINGS, Config, ConfigError,
                              HttpSettings, Listen, env_name, load_config)

PACKAGE = Path(__file__).parent.parent / "tempalias"
# Where the whole Config may be seen: its module, the one table drawn from it, and the
# composition root that hands each part of the service its section.
WHOLE_CONFIG_SEEN_IN = {"config.py", "settings_doc.py", "service.py", "cli.py"}


def test_defaults_without_file_or_environment():
    config = load_config(environ={})
    assert config == Config()
    assert config.http_listen == Listen("127.0.0.1", 8080)
    assert config.smtp_listen == Listen("127.0.0.1", 2525)
    assert config.metrics_listen == Listen("127.0.0.1", 9325)  # on loopback: no one outside scrapes
    assert (config.max_days, config.max_uses, config.data_dir) == (60, 100, "./var")
    assert config.redis_url is None and config.smarthost is None


def test_ini_file_then_environment_wins(tmp_path):
    ini = tmp_path / "tempalias.ini"
    ini.write_text("[tempalias]\ndomains = one.example, Two.Example\nmax_days = 30\n"
                   "smarthost = [::1]:2526\nhttp_listen = 0.0.0.0:80\n")
    config = load_config(str(ini), environ={"TEMPALIAS_MAX_DAYS": "20"})
    assert config.domains == ("one.example", "two.example")
    assert config.primary_domain == "one.example"
    assert config.max_days == 20
    assert config.smarthost == Listen("::1", 2526)
    assert config.http_listen == Listen("0.0.0.0", 80)


def test_the_default_domain_is_one_mail_can_be_sent_to():
    """Aliases made with no settings at all must take mail: SMTP accepts the default domain in
    a recipient, and it is RFC 6761's reserved loopback name, which no one else can own."""
    domain = load_config(environ={}).primary_domain
    assert parse_address(f"k3x9qa@{domain}").domain == domain
    assert domain.endswith(".localhost")


def test_default_days_follows_a_smaller_max_days():
    assert load_config(environ={"TEMPALIAS_MAX_DAYS": "3"}).default_days == 3


@pytest.mark.parametrize("name, value, words", [
    ("TEMPALIAS_MAX_DAYS", "abc", "whole number"),
    ("TEMPALIAS_MAX_DAYS", "0", "whole number"),
    ("TEMPALIAS_MAX_USES", "-5", "whole number"),
    ("TEMPALIAS_HTTP_LISTEN", "8080", "host:port"),
    ("TEMPALIAS_SMTP_LISTEN", "127.0.0.1:99999", "out of range"),
    ("TEMPALIAS_SMARTHOST", "smtp.example:x", "host:port"),
    ("TEMPALIAS_DOMAINS", " , ", "at least one domain"),
    ("TEMPALIAS_DOMAINS", "bad_domain!.example", "not a valid domain"),
    ("TEMPALIAS_DOMAINS", "localhost", "not a fully qualified domain name"),
    ("TEMPALIAS_DOMAINS", "mail.example, intranet", "not a fully qualified domain name"),
    ("TEMPALIAS_REDIS_URL", "localhost:6379", "redis://"),
    ("TEMPALIAS_REDIS_URL", "redis+sentinel://127.0.0.1:26379", "names no service"),
    ("TEMPALIAS_REDIS_URL", "redis+sentinel://127.0.0.1:x/tempalias", "is not HOST:PORT"),
    ("TEMPALIAS_REDIS_URL", "redis+cluster://127.0.0.1:7000/0", "one database"),
    ("TEMPALIAS_REDIS_URL", "redis+cluster://127.0.0.1:7000,,", "is not HOST:PORT"),
    ("TEMPALIAS_REDIS_WAIT_REPLICAS", "some", "auto or a whole number"),
    ("TEMPALIAS_LOG_LEVEL", "LOUD", "one of"),
    ("TEMPALIAS_DRAIN_SECONDS", "-1", "seconds"),
])
def test_bad_value_names_the_setting(name, value, words):
    with pytest.raises(ConfigError) as error:
        load_config(environ={name: value})
    message = str(error.value)
    assert message.startswith(name + ":") and words in message and "\n" not in message


def test_default_days_above_max_days_is_refused():
    with pytest.raises(ConfigError, match="TEMPALIAS_DEFAULT_DAYS"):
        load_config(environ={"TEMPALIAS_MAX_DAYS": "5", "TEMPALIAS_DEFAULT_DAYS": "6"})


def test_unknown_ini_key_and_missing_file_are_refused(tmp_path):
    ini = tmp_path / "t.ini"
    ini.write_text("[tempalias]\nmax_dayz = 3\n")
    with pytest.raises(ConfigError, match="max_dayz: unknown setting"):
        load_config(str(ini), environ={})
    with pytest.raises(ConfigError, match="No such file"):
        load_config(str(tmp_path / "absent.ini"), environ={})


def test_every_setting_is_a_config_field_and_documented():
    fields = set(Config.__dataclass_fields__)
    assert {setting.name for setting in SETTINGS} == fields
    for setting in SETTINGS:
        assert setting.doc and setting.section in SECTIONS
        assert env_name(setting) == "TEMPALIAS_" + setting.name.upper()


def test_a_section_holds_the_settings_of_its_part_and_no_other():
    config = load_config(environ={"TEMPALIAS_SMTP_IDLE_TIMEOUT": "30",
                                  "TEMPALIAS_HTTP_CLIENT_TIMEOUT": "5"})
    smtp = config.section("smtp")
    assert smtp.smtp_idle_timeout == 30.0 and not hasattr(smtp, "http_client_timeout")
    assert config.section("http").http_client_timeout == 5.0
    names = [f.name for part in SECTIONS for f in dataclasses.fields(config.section(part))]
    assert sorted(names) == sorted(setting.name for setting in SETTINGS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        smtp.smtp_idle_timeout = 1.0


def test_each_section_is_a_type_of_its_own_named_for_annotations():
    config = Config()
    for name in SECTIONS:
        kind = type(config.section(name))
        assert kind is SECTION_TYPES[name]
        assert getattr(tempalias.config, kind.__name__) is kind  # e.g. ``settings: SmtpSettings``
    http = config.section("http")
    assert isinstance(http, HttpSettings) and http.http_listen == Listen("127.0.0.1", 8080)
    assert not hasattr(http, "smtp_listen") and not hasattr(http, "trusted_proxies")


def _imports_of_the_whole_config(path: Path) -> list[str]:
    """What ``path`` imports that reaches the whole Config: ``Config`` or ``load_config``, or the
    config module itself (then ``config.Config`` is at hand)."""
    package = ["tempalias", *path.relative_to(PACKAGE).parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name == "tempalias.config"]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = {alias.name for alias in node.names}
            if module == "tempalias.config":
                found += sorted(names & {"Config", "load_config", "*"})
            elif module == "tempalias" and "config" in names:
                found.append("tempalias.config")
    return found


def test_only_the_composition_root_holds_the_whole_config():
    """Each part of the service is given its section (``Config.section``), plain values or the
    collaborators built for it (the policy, the alias service), never the whole Config: a module
    that imports it could be handed it again and read any setting at all."""
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative not in WHOLE_CONFIG_SEEN_IN and _imports_of_the_whole_config(path):
            offenders[relative] = _imports_of_the_whole_config(path)
    assert offenders == {}
    assert _imports_of_the_whole_config(PACKAGE / "service.py") == ["Config"]  # the check sees


def test_the_http_side_is_built_from_sections_alone(store, redis_client):
    """The abuse policy, the alias service, the app and the HTTP server each take their part of
    the settings; so built, the server creates an alias within the aliases section's domain and
    limits and tells the page those limits."""
    import gevent.socket

    from tempalias.abuse import AbusePolicy
    from tempalias.aliases import AliasService
    from tempalias.httpserver import HTTPServer
    from tempalias.listeners import bound_port, make_listener
    from tempalias.store import RateLimiter
    from tempalias.web import create_app

    config = Config(domains=("sections.test",), max_days=9, http_listen=Listen("127.0.0.1", 0))
    abuse, http = config.section("abuse"), config.section("http")
    limiter = RateLimiter(redis_client)
    policy = AbusePolicy.from_settings(abuse, limiter)
    aliases = AliasService.from_settings(config.section("aliases"), store, policy)
    server = HTTPServer(make_listener(http.http_listen),
                        create_app(http, aliases, abuse.trusted_proxies), http,
                        policy.connection_subject)
    server.start()

    def exchange(request: bytes) -> tuple[bytes, bytes]:
        with gevent.socket.create_connection(("127.0.0.1", bound_port(server.socket)), 10) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        return head.split(b"\r\n")[0], body

    try:
        order = json.dumps({"target": "owner@example.org", "days": 9}).encode()
        status, body = exchange(b"POST /api/v1/aliases HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Type: application/json\r\nConnection: close\r\n"
                                b"Content-Length: %d\r\n\r\n%s" % (len(order), order))
        assert status == b"HTTP/1.1 201 Created"
        assert json.loads(body)["address"].endswith("@sections.test")
        status, body = exchange(b"GET /config.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status == b"HTTP/1.1 200 OK"
        assert b'"domain": "sections.test"' in body and b'"maxDays": 9' in body
    finally:
        server.stop(timeout=5)
        limiter.close()


def test_the_settings_table_is_current():
    """The one table of every setting is generated; regenerate it with
    `python -m tempalias.settings_doc --write docs/configuration.md`."""
    from pathlib import Path

    from tempalias.settings_doc import START, replace_block

    table = (Path(__file__).parent.parent / "docs/configuration.md").read_text(encoding="utf-8")
    assert START in table and replace_block(table) == table


def test_postmaster_must_be_an_address_elsewhere():
    assert load_config(environ={"TEMPALIAS_POSTMASTER": "ops@example.net"}).postmaster == "ops@example.net"
    with pytest.raises(ConfigError, match="TEMPALIAS_POSTMASTER: must be an email address"):
        load_config(environ={"TEMPALIAS_POSTMASTER": "nobody"})
    with pytest.raises(ConfigError, match="would loop"):
        load_config(environ={"TEMPALIAS_POSTMASTER": "pm@mail.example",
                             "TEMPALIAS_DOMAINS": "mail.example"})
