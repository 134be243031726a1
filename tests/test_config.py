"""Configuration: defaults, INI file, environment precedence, and one clear line per bad value."""

from __future__ import annotations

import dataclasses

import pytest

from tempalias.addresses import parse_address
from tempalias.config import SECTIONS, SETTINGS, Config, ConfigError, Listen, env_name, load_config


def test_defaults_without_file_or_environment():
    config = load_config(environ={})
    assert config == Config()
    assert config.http_listen == Listen("127.0.0.1", 8080)
    assert config.smtp_listen == Listen("127.0.0.1", 2525)
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


def test_readme_settings_table_is_current():
    """The README's table is generated; regenerate it with `python -m tempalias.settings_doc --write README.md`."""
    from pathlib import Path

    from tempalias.settings_doc import replace_block

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert replace_block(readme) == readme


def test_postmaster_must_be_an_address_elsewhere():
    assert load_config(environ={"TEMPALIAS_POSTMASTER": "ops@example.net"}).postmaster == "ops@example.net"
    with pytest.raises(ConfigError, match="TEMPALIAS_POSTMASTER: must be an email address"):
        load_config(environ={"TEMPALIAS_POSTMASTER": "nobody"})
    with pytest.raises(ConfigError, match="would loop"):
        load_config(environ={"TEMPALIAS_POSTMASTER": "pm@mail.example",
                             "TEMPALIAS_DOMAINS": "mail.example"})
