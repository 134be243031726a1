"""``tempalias check`` (tempalias/checks.py) against real parts: a redis-server of the test's own,
SMTP peers, certificates made here, the loopback DNS server, and the command's exit status."""

from __future__ import annotations

import datetime
import json

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tempalias import checks, dnsrecords
from tempalias.config import Listen, load_config
from tempalias.dkimkeys import load_or_create_keys
from tempalias.embedded_redis import RedisServer, free_loopback_port
from tempalias.resolver import make_resolver
from test_cli import tempalias
from test_smtp_relay import sink_tls_context  # noqa: F401 (a fixture)

LOGIN = ("relay-user", "relay-secret")


def levels(results) -> list[str]:
    return [result.level for result in results]


@pytest.fixture
def own_redis_server(tmp_path):
    """A redis-server of this test's own, without persistence, that it may reconfigure."""
    server = RedisServer(str(tmp_path / "redis"), port=free_loopback_port(), persistent=False)
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    yield server, client
    client.close()
    server.stop()


def silent_port() -> int:
    """A loopback port nobody listens on: the connection is refused at once."""
    return free_loopback_port()


# --- Redis


def test_redis_that_evicts_is_a_fail_and_one_that_persists_nothing_a_warning(own_redis_server):
    server, client = own_redis_server
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.config_set("appendonly", "no")
    client.config_set("save", "")
    found = checks.redis_server(server.url, 2.0)
    assert levels(found) == ["OK", "FAIL", "WARN"]
    assert "allkeys-lru" in found[1].what and "noeviction" in found[1].advice
    assert "appendonly" in found[2].what

    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("appendonly", "yes")
    assert levels(checks.redis_server(server.url, 2.0)) == ["OK", "OK", "OK"]


def test_redis_that_refuses_config_is_a_warning(own_redis_server):
    server, client = own_redis_server
    client.execute_command("ACL", "SETUSER", "checker", "on", ">pw", "~*", "+@all", "-config")
    url = server.url.replace("redis://", "redis://checker:pw@")
    [refused] = checks.redis_server(url, 2.0)
    assert refused.level == "WARN" and "cannot read" in refused.what


def test_redis_that_does_not_answer_is_a_fail():
    [unreachable] = checks.redis_server(f"redis://127.0.0.1:{silent_port()}", 1.0)
    assert unreachable.level == "FAIL" and "did not answer" in unreachable.what


# --- the smarthost


def smarthost_settings(**env):
    return load_config(None, {f"TEMPALIAS_{k.upper()}": v for k, v in env.items()}
                       ).section("smarthost")


def test_a_smarthost_that_answers(own_peer):
    peer = own_peer()
    [found] = checks.smarthost(smarthost_settings(smarthost=peer.address), "check.test")
    assert found.level == "OK" and "EHLO" in found.what


def test_a_smarthost_with_starttls_and_auth(own_peer, sink_tls_context):  # noqa: F811
    peer = own_peer(tls_context=sink_tls_context, login=LOGIN)
    settings = dict(smarthost=peer.address, smarthost_tls="opportunistic",
                    smarthost_user=LOGIN[0])
    [right] = checks.smarthost(smarthost_settings(**settings, smarthost_password=LOGIN[1]),
                               "check.test")
    assert right.level == "OK" and "STARTTLS, AUTH" in right.what
    assert "clear" not in right.what
    [wrong] = checks.smarthost(smarthost_settings(**settings, smarthost_password="nope"),
                               "check.test")
    assert wrong.level == "FAIL" and "535" in wrong.what


def test_a_smarthost_without_the_starttls_required_or_not_answering(own_peer):
    peer = own_peer()  # no STARTTLS
    [no_tls] = checks.smarthost(smarthost_settings(smarthost=peer.address,
                                                   smarthost_tls="required"), "check.test")
    assert no_tls.level == "FAIL" and "does not offer STARTTLS" in no_tls.what
    [clear] = checks.smarthost(smarthost_settings(smarthost=peer.address,
                                                  smarthost_tls="opportunistic"), "check.test")
    assert clear.level == "WARN" and "clear" in clear.what
    [nobody] = checks.smarthost(smarthost_settings(smarthost=f"127.0.0.1:{silent_port()}"),
                                "check.test")
    assert nobody.level == "FAIL" and "refused" in nobody.what


# --- the STARTTLS certificate


def certificate(directory, name: str, days_left: float, key=None, days_before: float = 1):
    """A self-signed certificate of ``name`` ending in ``days_left`` days; its key's and its
    paths."""
    own_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.check.test")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(own_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=days_before))
            .not_valid_after(now + datetime.timedelta(days=days_left))
            .sign(own_key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes((key or own_key).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(cert_path), str(key_path)



def test_the_public_url_is_one_people_reach_over_tls():
    """The bookmarklet and the extension the page hands out call the public URL: unset behind a
    proxy it names this machine's loopback; plain HTTP carries tokens in clear."""
    def levels(*args):
        return [(result.level, result.what.split(":")[0]) for result in checks.public_url(*args)]

    assert levels(None, "127.0.0.1", 8080) == [("WARN", "no public URL")]
    [loopback] = checks.public_url(None, "127.0.0.1", 8080)
    assert "http://127.0.0.1:8080" in loopback.what and "TEMPALIAS_PUBLIC_URL" in loopback.advice
    assert "Host header" in checks.public_url(None, "0.0.0.0", 8080)[0].what
    assert levels("https://alias.example.org", "127.0.0.1", 8080) == [
        ("OK", "public URL https")]
    [plain] = checks.public_url("http://alias.example.org", "127.0.0.1", 8080)
    assert plain.level == "WARN" and "unencrypted" in plain.what
    assert checks.public_url(None, "192.0.2.7", 80)[0].level == "WARN"  # http on the network
    assert checks.public_url("http://localhost:8080", "127.0.0.1", 8080)[0].level == "OK"

def test_tls_certificates(tmp_path):
    [good] = checks.tls_certificate(*certificate(tmp_path, "good", 90))
    assert good.level == "OK"
    [ending] = checks.tls_certificate(*certificate(tmp_path, "ending", 3))
    assert ending.level == "WARN" and "within 14 days" in ending.what
    [ended] = checks.tls_certificate(*certificate(tmp_path, "ended", -1, days_before=30))
    assert ended.level == "FAIL" and "not valid now" in ended.what
    other_key = ec.generate_private_key(ec.SECP256R1())
    [mismatched] = checks.tls_certificate(*certificate(tmp_path, "other", 90, key=other_key))
    assert mismatched.level == "FAIL" and "is not the key" in mismatched.what
    [missing] = checks.tls_certificate(str(tmp_path / "none.crt"), str(tmp_path / "none.key"))
    assert missing.level == "FAIL" and "does not load" in missing.what
    [half] = checks.tls_certificate(str(tmp_path / "good.crt"), None)
    assert half.level == "FAIL"
    assert levels(checks.tls_certificate(None, None)) == ["OK"]


# --- DNS


def loopback_resolver(dns_zone, timeout: float = 1.0):
    return make_resolver((Listen("127.0.0.1", dns_zone.port),), timeout)


def test_block_lists_answer_for_the_test_address(dns_zone):
    dns_zone.set_records("2.0.0.127.listing.test", "A", ["127.0.0.2"])
    dns_zone.set_records("2.0.0.127.refusing.test", "A", ["127.255.255.254"])
    dns_zone.fail("2.0.0.127.silent.test", "timeout")
    dns_zone.fail("2.0.0.127.broken.test", "servfail")
    found = checks.rbl_zones(("listing.test", "empty.test", "refusing.test", "silent.test",
                              "broken.test"), loopback_resolver(dns_zone), 1.0)
    assert levels(found) == ["OK", "WARN", "FAIL", "FAIL", "FAIL"]
    assert "refuses our resolver" in found[2].what and "no answer" in found[3].what


def test_domain_records_as_dns_records_checks_them(dns_zone, tmp_path):
    keys = load_or_create_keys(load_config(None, {}).section("signing"), str(tmp_path))
    records = dnsrecords.expected("check.example", keys, "mx.check.example")
    missing = checks.domain_records("check.example", records, loopback_resolver(dns_zone))
    assert levels(missing) == ["WARN"] * 4
    assert "tempalias dns-records check.example" in missing[0].advice

    for record in records:
        dns_zone.publish(dnsrecords.zone_text(record))
    assert levels(checks.domain_records("check.example", records,
                                        loopback_resolver(dns_zone))) == ["OK"] * 4
    dns_zone.set_records("check.example", "MX", ["10 elsewhere.example"])
    dns_zone.fail("_dmarc.check.example", "timeout")
    changed = checks.domain_records("check.example", records, loopback_resolver(dns_zone))
    assert levels(changed) == ["WARN", "OK", "OK", "FAIL"]
    assert "different" in changed[0].what and "DMARC" in changed[3].what


# --- the command


def test_the_command_exits_non_zero_on_a_fail_only(own_redis_server, dns_zone, tmp_path):
    server, client = own_redis_server
    client.config_set("maxmemory-policy", "allkeys-lru")
    env = {"TEMPALIAS_REDIS_URL": server.url, "TEMPALIAS_DATA_DIR": str(tmp_path / "data"),
           "TEMPALIAS_DNS_SERVERS": dns_zone.address, "TEMPALIAS_DNS_TIMEOUT": "1",
           "TEMPALIAS_DOMAINS": "cmd.example"}
    failing = tempalias("check", env=env)
    assert failing.returncode == 1, failing.stderr
    lines = failing.stdout.splitlines()
    assert all(line.split(" ", 1)[0] in ("OK", "WARN", "FAIL") for line in lines)
    assert any(line.startswith("FAIL") and "maxmemory-policy" in line for line in lines)
    assert any(line.startswith("WARN") and "cmd.example: MX" in line for line in lines)

    client.config_set("maxmemory-policy", "noeviction")
    warned = tempalias("check", "--json", env=env)
    assert warned.returncode == 0, warned.stdout
    body = json.loads(warned.stdout)
    assert body["ok"] is True and "FAIL" not in {c["level"] for c in body["checks"]}
    assert "WARN" in {c["level"] for c in body["checks"]}  # no persistence, no records

    broken = tempalias("check", env={**env, "TEMPALIAS_REDIS_TIMEOUT": "soon"})
    assert broken.returncode == 1
    assert broken.stdout.startswith("FAIL the configuration does not parse: TEMPALIAS_REDIS_TIMEOUT")
    assert "Traceback" not in broken.stdout + broken.stderr
