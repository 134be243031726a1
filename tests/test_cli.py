"""The ``tempalias`` command as an operator runs it: admin commands, serve, signals, embedded Redis."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import smtplib
import subprocess
import sys
import time

import dkim
import psutil
import pytest
import requests

from harness.processes import ServiceProcess, wait_for
from tempalias.config import Listen, load_config
from tempalias.dkimkeys import load_or_create_keys
from tempalias.dnsrecords import Record, zone_text
from tempalias.resolver import make_resolver
from tempalias.signing import Signer
from tempalias.store import DomainStore, hash_token, keys
from test_migration import write_schema_1_alias


def tempalias(*args, env=None, cwd=None):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TEMPALIAS_")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "tempalias", *args], env=environment, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def admin_env(redis_server):
    return {"TEMPALIAS_REDIS_URL": redis_server.url, "TEMPALIAS_DOMAINS": "cli.example"}


def test_create_show_revoke(admin_env, store):
    created = tempalias("create", "--target", "cli@example.org", "--days", "2", "--uses", "3",
                        env=admin_env)
    assert created.returncode == 0, created.stderr
    address = re.search(r"address: (\w+)@cli\.example", created.stdout)
    token = re.search(r"token:\s+(\S+)", created.stdout)
    assert address and token
    alias_id = address.group(1)
    assert store.get(alias_id, token.group(1)).uses_left == 3

    shown = tempalias("show", alias_id.upper(), env=admin_env)
    assert shown.returncode == 0
    body = json.loads(shown.stdout)
    assert body["target"] == "cli@example.org" and body["uses_left"] == 3
    assert token.group(1) not in shown.stdout

    revoked = tempalias("revoke", alias_id, env=admin_env)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    missing = tempalias("show", alias_id, env=admin_env)
    assert missing.returncode == 1 and "no live alias" in missing.stderr


def test_create_and_show_in_json_have_the_rest_apis_fields(admin_env, store):
    created = tempalias("create", "--target", "json@example.org", "--uses", "2", "--json",
                        env=admin_env)
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)  # one object, nothing else on stdout
    assert set(body) == {"id", "address", "target", "created_at", "expires_at", "uses_left",
                         "replies", "token"}
    assert store.get(body["id"], body["token"]).uses_left == 2

    shown = tempalias("show", "--json", body["id"], env=admin_env)
    assert shown.returncode == 0 and shown.stdout.count("\n") == 1
    assert json.loads(shown.stdout) == {**{k: v for k, v in body.items() if k != "token"},
                                        "delivered": 0, "active": True}
    tempalias("revoke", body["id"], env=admin_env)
    missing = tempalias("show", "--json", body["id"], env=admin_env)
    assert missing.returncode == 1 and missing.stdout == ""


def test_version_and_help():
    version = tempalias("--version")
    assert version.returncode == 0
    assert re.fullmatch(r"tempalias \d+\.\d+\.\d+\n", version.stdout)
    top = tempalias("--help")
    assert top.returncode == 0 and "``" not in top.stdout
    for command in ("serve", "create", "show", "revoke", "purge", "migrate", "domain",
                    "dns-records", "check", "extension"):
        assert re.search(rf"^    {command} +\S", top.stdout, re.M)  # each with its line
        shown = tempalias(command, "--help")
        options = re.findall(r"^  (-[-\w]+(?: \w+)?|\w+) *(.*)$", shown.stdout, re.M)
        assert options and all(text for _, text in options), (command, shown.stdout)


def test_create_refuses_invalid_input_with_one_line(admin_env):
    result = tempalias("create", "--target", "nope", env=admin_env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "target" in result.stderr


def test_purge_reports_what_it_removed(admin_env, store):
    store.purge()
    domain = f"purge{secrets.token_hex(4)}.example.org"
    domains = DomainStore(store.redis, runner=store.runner)
    now = int(time.time() * 1000)
    domains.register(domain, hash_token("owner"), now)
    domains.activate(domain, hash_token("owner"), "tempalias-verify=x", now)
    ended = store.create("a@example.org", 1, None, domain=domain, custom=True)
    wait_for(lambda: time.time() * 1000 > ended.alias.expires_ms, 5, "the alias to end")
    result = tempalias("purge", env=admin_env)
    assert result.returncode == 0
    assert re.match(r"purged \d+ ended alias", result.stdout)
    assert int(result.stdout.split()[1]) >= 1
    assert not store.redis.exists(keys.alias_key(ended.alias.id))


def test_migrate_says_what_it_did_and_finds_nothing_the_second_time(own_redis,
                                                                    module_redis_server):
    env = {"TEMPALIAS_REDIS_URL": module_redis_server.url}
    write_schema_1_alias(own_redis, "oldcli", "old token", int(time.time() * 1000) + 3_600_000)
    first = tempalias("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == ("tempalias migrate: folded 1 id reservations into the retired-id "
                            "bit set, compacted 1 alias hashes, moved 1 aliases under their "
                            "shards' tags, dropped ta:ends; schema 2\n")
    again = tempalias("migrate", env=env)
    assert again.returncode == 0 and "folded 0 " in again.stdout and "moved 0 " in again.stdout
    assert own_redis.get(keys.SCHEMA_KEY) == "2"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_migrates_an_older_schema_before_it_serves(service_factory, own_redis,
                                                         module_redis_server, workers):
    write_schema_1_alias(own_redis, "oldserve", "old token",
                         int(time.time() * 1000) + 3_600_000, uses=5)
    service = service_factory(env={"TEMPALIAS_REDIS_URL": module_redis_server.url,
                                   "TEMPALIAS_WORKERS": workers})
    assert own_redis.get(keys.SCHEMA_KEY) == "2"  # before it said it was ready
    shown = requests.get(f"{service.http_url}/api/v1/aliases/oldserve", timeout=10,
                         headers={"Authorization": "Bearer old token"})
    assert shown.status_code == 200 and shown.json()["uses_left"] == 5
    service.stop()


@pytest.fixture
def domain_env(admin_env, dns_zone, tmp_path):
    return {**admin_env, "TEMPALIAS_DNS_SERVERS": dns_zone.address, "TEMPALIAS_DNS_TIMEOUT": "2",
            "TEMPALIAS_SRS_SECRET": "cli-secret", "TEMPALIAS_MX_HOSTNAME": "mx.cli.example",
            "TEMPALIAS_DATA_DIR": str(tmp_path)}


def test_the_operator_adds_verifies_shows_and_removes_a_custom_domain(domain_env, dns_zone,
                                                                      redis_client):
    domain = f"d{secrets.token_hex(4)}.example.org"
    added = tempalias("domain", "add", domain.upper(), env=domain_env)
    assert added.returncode == 0, added.stderr
    token = re.search(r"token:\s+(\S+)", added.stdout).group(1)
    records = re.findall(r"^  (\S+)\. (MX|TXT) (.+)$", added.stdout, re.MULTILINE)
    assert [(name, kind) for name, kind, _ in records] == [(domain, "MX"),
                                                           (f"_tempalias.{domain}", "TXT")]
    assert records[0][2] == "10 mx.cli.example" and token not in records[1][2]

    early = tempalias("domain", "verify", domain, env=domain_env)
    assert early.returncode == 1 and "no MX record" in early.stderr and "no TXT" in early.stderr
    shown = json.loads(tempalias("domain", "show", domain, env=domain_env).stdout)
    assert (shown["status"], shown["registrations"]) == ("pending", 1)

    for name, kind, value in records:
        dns_zone.set_records(name, kind, [value])
    verified = tempalias("domain", "verify", domain, env=domain_env)
    assert verified.returncode == 0 and verified.stdout.strip() == f"{domain}: active"
    assert redis_client.hget(keys.domain_key(domain), "token") == hash_token(token)
    shown = json.loads(tempalias("domain", "show", domain, env=domain_env).stdout)
    assert (shown["status"], shown["aliases"]) == ("active", 0)
    assert token not in json.dumps(shown)

    removed = tempalias("domain", "remove", domain, env=domain_env)
    assert removed.returncode == 0 and "erased" in removed.stdout
    missing = tempalias("domain", "show", domain, env=domain_env)
    assert missing.returncode == 1 and "no domain" in missing.stderr


def test_the_operator_rechecks_the_domains_that_are_due(domain_env, dns_zone, redis_client,
                                                       store):
    domain = f"d{secrets.token_hex(4)}.example.org"
    domains = DomainStore(redis_client, runner=store.runner)
    now = int(time.time() * 1000)
    domains.register(domain, hash_token("owner"), now)
    domains.activate(domain, hash_token("owner"), "tempalias-verify=x", now)
    redis_client.zadd(keys.DOMAINS_KEY, {domain: now - 1000}, xx=True)
    result = tempalias("domain", "recheck", env=domain_env)
    assert result.returncode == 0, result.stderr
    assert f"{domain}: suspended" in result.stdout
    assert redis_client.hget(keys.domain_key(domain), "status") == "suspended"


@pytest.mark.parametrize("args, words", [
    (("domain", "add", "cli.example"), "domain of this service"),
    (("domain", "add", "intranet"), "fully qualified"),
    (("domain", "verify", "never-registered.example"), "no domain or registration"),
    (("domain", "remove", "never-registered.example"), "no domain or registration"),
    (("domain", "show"), "takes one"),
    (("domain", "recheck", "a.example"), "takes no DOMAIN"),
])
def test_domain_commands_refuse_with_one_line(domain_env, args, words):
    result = tempalias(*args, env=domain_env)
    assert result.returncode in (1, 2)
    assert words in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def records_env(dns_zone, tmp_path):
    """dns-records needs no Redis: the data directory's key, the DNS server, the MX host."""
    return {"TEMPALIAS_DOMAINS": "records.example", "TEMPALIAS_DATA_DIR": str(tmp_path / "data"),
            "TEMPALIAS_DNS_SERVERS": dns_zone.address, "TEMPALIAS_DNS_TIMEOUT": "1",
            "TEMPALIAS_MX_HOSTNAME": "mx.records.example", "TEMPALIAS_DKIM_ED25519": "yes"}


def zone_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if " IN " in line and not line.startswith(";")]


def test_dns_records_prints_what_to_publish_and_sees_it_published(records_env, dns_zone):
    missing = tempalias("dns-records", "records.example", env=records_env)
    assert missing.returncode == 1, missing.stderr
    key_file = os.path.join(records_env["TEMPALIAS_DATA_DIR"], "dkim.key")
    assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"
    lines = zone_lines(missing.stdout)
    assert [line.split(" IN ")[0] for line in lines] == [
        "records.example.", "records.example.", "tempalias._domainkey.records.example.",
        "tempalias-ed._domainkey.records.example.", "_dmarc.records.example."]
    assert lines[0] == "records.example. IN MX 10 mx.records.example."
    assert missing.stdout.count("; [missing]") == 5
    assert "0 of 5 records present" in missing.stderr

    for line in lines:  # the operator pastes them into the zone
        dns_zone.publish(line)
    present = tempalias("dns-records", "records.example", env=records_env)
    assert present.returncode == 0, present.stderr
    assert present.stdout.count("; [present]") == 5
    assert zone_lines(present.stdout) == lines  # the key was made once and kept

    # what the service signs with verifies against the records as published
    settings = load_config(None, {"TEMPALIAS_DKIM_ED25519": "yes"}).section("signing")
    keys = load_or_create_keys(settings, records_env["TEMPALIAS_DATA_DIR"])
    message = b"From: a@records.example\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nhi\r\n"
    signed = Signer(keys, "mx.records.example").sign(message, "records.example") + message
    resolver = make_resolver((Listen("127.0.0.1", dns_zone.port),), 2.0)

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT", search=False)
        return b"".join(answer.rrset[0].strings)

    assert dkim.DKIM(signed).verify(idx=0, dnsfunc=dnsfunc)
    assert dkim.DKIM(signed).verify(idx=1, dnsfunc=dnsfunc)

    dns_zone.set_records("records.example", "MX", ["10 mail.elsewhere.example"])
    different = tempalias("dns-records", "records.example", env=records_env)
    assert different.returncode == 1
    assert "; [different] MX" in different.stdout
    assert ";   published instead: 10 mail.elsewhere.example" in different.stdout


def test_dns_records_in_json(records_env, dns_zone):
    dns_zone.set_records("records.example", "MX", ["10 mail.elsewhere.example"])
    missing = tempalias("dns-records", "--json", "records.example", env=records_env)
    assert missing.returncode == 1
    body = json.loads(missing.stdout)
    assert body["domain"] == "records.example"
    assert [(r["type"], r["state"]) for r in body["records"]] == [
        ("MX", "different"), ("TXT", "missing"), ("TXT", "missing"), ("TXT", "missing"),
        ("TXT", "missing")]
    assert body["records"][0]["found"] == ["10 mail.elsewhere.example"]
    assert set(body["records"][0]) == {"type", "name", "value", "why", "state", "found"}

    dns_zone.clear_records("records.example")
    for record in body["records"]:  # as the operator would: the zone-file lines
        dns_zone.publish(zone_text(Record(record["name"], record["type"], record["value"], "")))
    present = tempalias("dns-records", "--json", "records.example", env=records_env)
    assert present.returncode == 0, present.stderr
    assert {r["state"] for r in json.loads(present.stdout)["records"]} == {"present"}

    dns_zone.fail("_dmarc.records.example", "servfail")
    unknown = tempalias("dns-records", "--json", "records.example", env=records_env)
    assert unknown.returncode == 3 and json.loads(unknown.stdout)["records"][-1]["state"] == "unknown"
    unchecked = tempalias("dns-records", "--json", "--no-check", "records.example", env=records_env)
    assert unchecked.returncode == 0
    assert "state" not in json.loads(unchecked.stdout)["records"][0]


def test_dns_records_when_dns_does_not_answer(records_env, dns_zone):
    dns_zone.fail("_dmarc.records.example", "servfail")
    result = tempalias("dns-records", "records.example", env=records_env)
    assert result.returncode == 3
    assert "; [unknown] DMARC" in result.stdout and "try again later" in result.stderr


def test_dns_records_without_a_check_asks_no_dns(records_env, dns_zone):
    result = tempalias("dns-records", "--no-check", "--spf-include", "_spf.relay.example",
                       "records.example", env=records_env)
    assert result.returncode == 0, result.stderr
    assert 'records.example. IN TXT "v=spf1 mx include:_spf.relay.example ~all"' in result.stdout
    assert len(zone_lines(result.stdout)) == 5 and "[" not in result.stdout
    assert not dns_zone.queries


@pytest.mark.parametrize("args, code, words", [
    (("dns-records", "not a domain"), 2, "not a valid domain name"),
    (("dns-records", "--spf-include", "bad..name", "records.example"), 2, "SPF include"),
    (("dns-records",), 2, "required: domain"),
])
def test_dns_records_refuses_bad_input_with_one_line(records_env, args, code, words):
    result = tempalias(*args, env=records_env)
    assert result.returncode == code and words in result.stderr
    assert "Traceback" not in result.stderr


def test_dns_records_refuses_an_unusable_key_with_one_line(records_env, tmp_path):
    (tmp_path / "key.pem").write_text("not a key\n")
    result = tempalias("dns-records", "records.example",
                       env={**records_env, "TEMPALIAS_DKIM_KEY": str(tmp_path / "key.pem")})
    assert result.returncode == 2 and "not a PEM private key" in result.stderr
    assert result.stderr.count("\n") == 1


def test_bad_setting_stops_start_up_with_one_clear_line():
    result = tempalias("serve", env={"TEMPALIAS_MAX_USES": "lots"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "TEMPALIAS_MAX_USES" in result.stderr and "Traceback" not in result.stderr


def test_missing_redis_binary_says_how_to_install(tmp_path):
    env = {"PATH": str(tmp_path), "TEMPALIAS_DATA_DIR": str(tmp_path / "data"),
           "TEMPALIAS_HTTP_LISTEN": "127.0.0.1:0"}
    result = tempalias("serve", env=env)
    assert result.returncode == 1
    assert "redis-server" in result.stderr and "apt-get install redis-server" in result.stderr
    assert "Traceback" not in result.stderr


def test_redis_unreachable_for_admin_command_is_one_line(tmp_path):
    result = tempalias("show", "abc", env={"TEMPALIAS_REDIS_URL": "redis://127.0.0.1:1/0",
                                           "TEMPALIAS_REDIS_TIMEOUT": "1"})
    assert result.returncode == 1 and "redis unreachable" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["redis+cluster://127.0.0.1:1,127.0.0.1:2",
                                 "redis+sentinel://127.0.0.1:1,127.0.0.1:2/tempalias"])
def test_an_unreachable_cluster_or_sentinel_set_is_one_line(url):
    result = tempalias("show", "abc", env={"TEMPALIAS_REDIS_URL": url,
                                           "TEMPALIAS_REDIS_TIMEOUT": "1"})
    assert result.returncode == 1 and "redis unreachable" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_embedded_redis_keeps_aliases_across_restarts(tmp_path):
    service = ServiceProcess(tmp_path, {"TEMPALIAS_DOMAINS": "embedded.example"}).start()
    try:
        created = requests.post(f"{service.http_url}/api/v1/aliases", timeout=10,
                                json={"target": "keep@example.org", "uses": 4}).json()
        redis_dir = tmp_path / "data" / "redis"
        assert (redis_dir / "redis.sock").exists()
        redis_pid = _child_redis_pid(service.pid)
    finally:
        assert service.stop() == 0
    assert not _alive(redis_pid), "the embedded redis-server outlived tempalias"
    assert (redis_dir / "appendonly").is_dir()

    # The operator's CLI reaches the embedded store while nothing runs, too.
    shown = tempalias("show", created["id"], env={"TEMPALIAS_DATA_DIR": str(tmp_path / "data")})
    assert shown.returncode == 0 and json.loads(shown.stdout)["uses_left"] == 4

    service.start()
    try:
        answer = requests.get(f"{service.http_url}/api/v1/aliases/{created['id']}", timeout=10,
                              headers={"Authorization": f"Bearer {created['token']}"})
        assert answer.status_code == 200 and answer.json()["target"] == "keep@example.org"
    finally:
        assert service.stop() == 0


def _redis_servers(service: ServiceProcess) -> list[psutil.Process]:
    """Every live redis-server below the service, workers' children included."""
    return [child for child in psutil.Process(service.pid).children(recursive=True)
            if child.name().startswith("redis-server") and child.status() != psutil.STATUS_ZOMBIE]


def _alias_resolves(service: ServiceProcess, created: dict) -> bool:
    """The alias answers over HTTP and SMTP; each on a new connection, so any worker may take it."""
    try:
        shown = requests.get(f"{service.http_url}/api/v1/aliases/{created['id']}", timeout=10,
                             headers={"Authorization": f"Bearer {created['token']}"})
        if shown.status_code != 200 or shown.json()["target"] != "keep@example.org":
            return False
        with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=10) as client:
            client.ehlo("client.example")
            client.mail("a@sender.example")
            return client.rcpt(created["address"])[0] == 250
    except (requests.RequestException, smtplib.SMTPException, OSError):
        return False


@pytest.mark.parametrize("workers", [1, 2])
def test_killed_embedded_redis_is_restarted_with_its_aliases(tmp_path, workers):
    """Issue 11 (4): ``kill -9`` of the embedded redis-server made every request fail until the
    operator came. The process that started it brings it back on the same socket, with the
    append-only file, and every worker finds it again by itself."""
    service = ServiceProcess(tmp_path, {"TEMPALIAS_DOMAINS": "embedded.example",
                                        "TEMPALIAS_WORKERS": str(workers)}).start()
    try:
        created = requests.post(f"{service.http_url}/api/v1/aliases", timeout=10,
                                json={"target": "keep@example.org", "uses": 10}).json()
        [killed] = _redis_servers(service)
        killed.kill()
        killed.wait(10)

        def recovered() -> bool:
            health = requests.get(f"{service.http_url}/healthz", timeout=10).status_code == 200
            return health and all(_alias_resolves(service, created) for _ in range(2 * workers))

        wait_for(recovered, 15, "tempalias to answer again with the alias made before the kill")
        [restarted] = _redis_servers(service)  # one, and the service's own (not a worker's)
        assert restarted.pid != killed.pid and restarted.ppid() == service.pid
        assert (tmp_path / "data" / "redis" / "redis.sock").exists()
    finally:
        assert service.stop() == 0
    assert not _alive(restarted.pid), "the restarted redis-server outlived tempalias"


def test_second_serve_on_the_same_data_dir_is_refused(tmp_path):
    first = ServiceProcess(tmp_path, {}).start()
    try:
        env = {"TEMPALIAS_DATA_DIR": str(tmp_path / "data"), "TEMPALIAS_HTTP_LISTEN": "127.0.0.1:0"}
        second = tempalias("serve", env=env)
        assert second.returncode == 1 and "already answers" in second.stderr
        assert requests.get(f"{first.http_url}/healthz", timeout=10).status_code == 200
    finally:
        first.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_and_exits_zero(service_factory, sig):
    service = service_factory()
    # An idle keep-alive connection must not hold up the exit beyond the drain bound.
    session = requests.Session()
    assert session.get(f"{service.http_url}/healthz", timeout=10).status_code == 200
    assert service.stop(sig) == 0  # handled: unhandled, either would end it with another status
    session.close()


def _child_redis_pid(parent_pid: int) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/comm") as comm:
                    name = comm.read().strip()
            except OSError:
                continue
            if int(fields[1]) == parent_pid and name.startswith("redis-server"):
                return int(entry)
    raise AssertionError("no redis-server child found")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_taken_port_is_one_clear_line(redis_server, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = tempalias("serve", env={
            "TEMPALIAS_REDIS_URL": redis_server.url, "TEMPALIAS_WORKERS": "1",
            "TEMPALIAS_HTTP_LISTEN": "127.0.0.1:0", "TEMPALIAS_SMTP_LISTEN": f"127.0.0.1:{port}",
            "TEMPALIAS_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert "Address already in use" in result.stderr and "Traceback" not in result.stderr


def test_serve_with_an_unusable_dkim_key_says_so_in_one_line(admin_env, tmp_path):
    bad = tmp_path / "key.pem"
    bad.write_text("not a key\n")
    result = tempalias("serve", env={**admin_env, "TEMPALIAS_DATA_DIR": str(tmp_path / "data"),
                                     "TEMPALIAS_DKIM_KEY": str(bad)})
    assert result.returncode == 2
    assert str(bad) in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def guarded_redis(tmp_path):
    """A redis-server of the test's own that asks for a password, on a free loopback port."""
    from tempalias.embedded_redis import free_loopback_port

    port = free_loopback_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", "s3cret",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "-a", "s3cret",
                                         "--no-auth-warning", "ping"], capture_output=True,
                                        text=True).stdout.strip() == "PONG", 10, "redis-server")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_the_redis_password_can_come_from_its_own_setting(guarded_redis):
    env = {"TEMPALIAS_REDIS_URL": guarded_redis, "TEMPALIAS_DOMAINS": "cli.example"}
    made = tempalias("create", "--target", "me@example.org", env={
        **env, "TEMPALIAS_REDIS_PASSWORD": "s3cret"})
    assert made.returncode == 0, made.stderr
    assert "@cli.example" in made.stdout
    refused = tempalias("create", "--target", "me@example.org", env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    # a password in the URL wins over the setting
    in_url = guarded_redis.replace("redis://", "redis://:s3cret@")
    assert tempalias("create", "--target", "me@example.org", env={
        **env, "TEMPALIAS_REDIS_URL": in_url, "TEMPALIAS_REDIS_PASSWORD": "wrong"}).returncode == 0
