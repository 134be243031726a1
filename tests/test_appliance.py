"""The appliance's files, checked by the tools that will read them and run for real on loopback.

Each production file names production paths (/opt/tempalias, /etc/tempalias, port 80, ...). The
tests copy it with those paths replaced by the test's own; ``rewrite`` fails when a path it
replaces is no longer in the file, so a test never runs a file it did not mean to.
"""

from __future__ import annotations

import ast
import gzip
import http.client
import http.server
import importlib.util
import json
import os
import re
import resource
import secrets
import selectors
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import netns
from harness.processes import Child, ServiceProcess, wait_for
from tempalias.config import SETTINGS, load_config
from tempalias.embedded_redis import free_loopback_port

REPO = Path(__file__).resolve().parent.parent
APPLIANCE = REPO / "appliance"
SYSTEMD = REPO / "systemd"
VENV_BIN = Path(sys.executable).parent
TIMEOUT = 30.0


def rewrite(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"{old!r} is no longer in the file: update the test's rewrite")
        text = text.replace(old, new)
    return text


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None, https_context=None,
                 source: str | None = None, timeout: float = 10, host: str = "127.0.0.1"):
    """One request on a fresh connection (from the loopback address ``source`` if given);
    returns (status, headers dict lower-cased, body)."""
    source_address = (source, 0) if source else None
    if https_context is None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout,
                                          source_address=source_address)
    else:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                           source_address=source_address, context=https_context)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        data = answer.read()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, data
    finally:
        conn.close()


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False



def test_the_source_the_image_and_a_server_install_holds_every_directory_setup_py_maps():
    """setup.py maps static/ and extension/ into the wheel (FRONTEND): a payload without one
    of them fails `pip install` inside the image build (it did, when extension/ came)."""
    mapped = re.search(r"FRONTEND = (\{[^}]*\})", (REPO / "setup.py").read_text()).group(1)
    directories = set(ast.literal_eval(mapped).values())
    assert directories == {"static", "extension"}
    for script, pattern in (("build-image.sh", r"-C \"\$src\" setup\.py ([^\\\n]*)"),
                            ("provision.sh", r"\n    setup\.py ([^)]*)\)")):
        listed = re.search(pattern, (REPO / "appliance" / script).read_text()).group(1).split()
        assert directories <= set(listed), (script, listed)

# --- static checks by the tools themselves


def test_shell_scripts_pass_shellcheck():
    scripts = sorted([*APPLIANCE.glob("*.sh"), *(REPO / "packer").glob("*.sh")])
    assert APPLIANCE / "provision.sh" in scripts
    result = run(["shellcheck", "--shell=sh", *map(str, scripts)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_preinstalls_what_provision_installs():
    """Otherwise the image build silently falls back to apt-get inside the slow guest."""
    script = (APPLIANCE / "provision.sh").read_text()
    provision = re.search(r'^packages="([^"]+)"', script, re.M)
    appliance_only = re.search(r'^appliance_packages="([^"]+)"', script, re.M)
    base = re.search(r"^appliance_packages=(\S+)$", (APPLIANCE / "build-base.sh").read_text(),
                     re.M)
    assert provision and appliance_only and base
    assert set(provision.group(1).split()) | set(appliance_only.group(1).split()) == \
        set(base.group(1).split(","))


NODE_EXPORTER_DEFAULTS = APPLIANCE / "node-exporter.default"


def test_the_node_exporter_listens_on_loopback_only():
    """The appliance's node exporter adds no listener reachable from outside: its ARGS, as the
    Debian unit's shell-less $ARGS splits them, hold one listening address, on loopback."""
    shown = run(["sh", "-c", '. "$1" && printf %s "$ARGS"', "sh", str(NODE_EXPORTER_DEFAULTS)])
    assert shown.returncode == 0, shown.stderr
    listening = [arg for arg in shown.stdout.split() if arg.startswith("--web.listen-address")]
    assert listening == ["--web.listen-address=127.0.0.1:9100"]


def test_provision_writes_the_node_exporters_settings_once_and_on_the_appliance_only():
    script = (APPLIANCE / "provision.sh").read_text()
    marker = re.search(r"grep -qs '\^([^']+)' \"\$node_exporter_defaults\"", script)
    assert marker, "provision.sh no longer tells its own file from the operator's"
    assert NODE_EXPORTER_DEFAULTS.read_text().startswith(marker.group(1))
    assert re.search(r'if \[ "\$appliance" = yes \] && ! grep -qs .*\n\s+install .*'
                     r'node-exporter\.default" "\$node_exporter_defaults"', script)
    assert "node_exporter_defaults=/etc/default/prometheus-node-exporter" in script.splitlines()


def test_example_ini_is_current_and_names_every_setting():
    result = run([sys.executable, str(APPLIANCE / "example_ini.py"), "--check"])
    assert result.returncode == 0, result.stderr
    text = (APPLIANCE / "tempalias.ini").read_text()
    key_line = re.compile(r"^(?:; )?([a-z][a-z0-9_]*) =")
    keys = {match.group(1) for match in map(key_line.match, text.splitlines()) if match}
    missing = [setting.name for setting in SETTINGS if setting.name not in keys]
    assert not missing, f"settings missing from appliance/tempalias.ini: {missing}"
    config = load_config(str(APPLIANCE / "tempalias.ini"), environ={})
    assert config.data_dir == "/var/lib/tempalias"
    assert config.redis_url.startswith("unix://")


def test_systemd_units_verify(tmp_path):
    """systemd-analyze checks every unit; the venv, absent from this host, is the repo's own."""
    for unit in sorted([*SYSTEMD.glob("*.service"), *SYSTEMD.glob("*.timer")]):
        text = unit.read_text()
        if "/opt/tempalias/venv/bin/" in text:
            text = rewrite(text, {"/opt/tempalias/venv/bin/": f"{VENV_BIN}/"})
        (tmp_path / unit.name).write_text(text)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert {"tempalias.service", "tempalias-redis.service", "tempalias-firewall.service",
            "tempalias-configure.service", "tempalias-purge.timer"} <= set(names)
    result = run(["systemd-analyze", "verify", *names], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


def _redis_condition(ini: Path) -> int:
    """The exit status of tempalias-redis.service's ExecCondition against ``ini``."""
    [line] = [line for line in (SYSTEMD / "tempalias-redis.service").read_text().splitlines()
              if line.startswith("ExecCondition=")]
    argv = shlex.split(line.split("=", 1)[1].replace("\\\\", "\\"))
    argv[-1] = str(ini)
    return run(argv).returncode


def test_the_appliances_redis_runs_only_when_tempalias_keeps_its_aliases_there(tmp_path):
    """Issue 15: an appliance joining a Sentinel set or a Cluster leaves its own Redis stopped."""
    own = (APPLIANCE / "tempalias.ini").read_text()
    (tmp_path / "own.ini").write_text(own)
    assert _redis_condition(tmp_path / "own.ini") == 0
    for url in ("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/tempalias",
                "redis+cluster://10.0.0.1:7000,10.0.0.2:7000", "redis://redis.example:6379/0"):
        joined = re.sub(r"(?m)^redis_url = .*$", f"redis_url = {url}", own)
        (tmp_path / "joined.ini").write_text(joined)
        assert _redis_condition(tmp_path / "joined.ini") == 1, url


def test_tempalias_unit_has_descriptors_for_every_connection_it_may_hold():
    from tempalias.config import Config

    [limit] = [int(line.split("=", 1)[1]) for line in
               (SYSTEMD / "tempalias.service").read_text().splitlines()
               if line.startswith("LimitNOFILE=")]
    config = Config()
    assert limit >= 2 * (config.smtp_max_connections + config.http_max_connections)


def test_tempalias_unit_lets_supervisord_chown_its_socket():
    """supervisord exits at start when chown(2) of its control socket fails; the unit's
    syscall filter denies @privileged (which holds @chown), so it must allow @chown after it.
    Found by booting the image (tests/test_image.py), where the service never came up."""
    filters = [line.split("=", 1)[1] for line in
               (SYSTEMD / "tempalias.service").read_text().splitlines()
               if line.startswith("SystemCallFilter=")]
    denied = [i for i, f in enumerate(filters) if f.startswith("~") and "@privileged" in f]
    allowed = [i for i, f in enumerate(filters) if not f.startswith("~") and "@chown" in f.split()]
    assert not denied or (allowed and max(allowed) > max(denied)), filters


def test_tempalias_unit_is_hardened():
    text = (SYSTEMD / "tempalias.service").read_text()
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                 "ReadWritePaths=/var/lib/tempalias /var/log/tempalias",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "User=tempalias"):
        assert line in text.splitlines(), line


# systemd-analyze's exposure scale runs from 0 (SAFE) to 10 (UNSAFE); tempalias.service, the one
# with the most to do, is at 1.4.
SERVICE_EXPOSURE_LIMIT = 2.0


def test_every_service_is_sandboxed():
    """Each unit as hardened as its job allows, judged by systemd's own scale."""
    levels = {}
    for unit in sorted(SYSTEMD.glob("*.service")):
        result = run(["systemd-analyze", "security", "--offline=yes", str(unit)])
        level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
        assert level, result.stdout + result.stderr
        levels[unit.name] = float(level.group(1))
    assert {"tempalias.service", "tempalias-redis.service", "tempalias-configure.service",
            "tempalias-firewall.service", "tempalias-purge.service"} <= set(levels)
    exposed = {name: level for name, level in levels.items() if level > SERVICE_EXPOSURE_LIMIT}
    assert not exposed, f"exposure above {SERVICE_EXPOSURE_LIMIT}: {exposed}"


def test_packer_template_validates(tmp_path):
    key = tmp_path / "build-key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)]).check_returncode()
    base = tmp_path / "base.qcow2"
    payload = tmp_path / "payload.tar.gz"
    base.write_bytes(b"")
    payload.write_bytes(b"")
    result = run(["packer", "validate",
                  "-var", f"base_image={base}", "-var", f"payload={payload}",
                  "-var", f"build_key={key}", "-var", f"output_directory={tmp_path / 'out'}",
                  str(REPO / "packer" / "tempalias.json")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_firewall_rules_are_accepted_by_nft():
    result = run(["nft", "--check", "--file", str(APPLIANCE / "firewall.nft")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_docs_fence_for_the_exporters_is_accepted_by_nft(tmp_path):
    """docs/monitoring.md's table that lets one Prometheus reach ports 9100 and 9325 and drops
    everyone else: an operator pastes it as it is shown."""
    text = (REPO / "docs/monitoring.md").read_text()
    [table] = re.findall(r"```\n(\s*table inet .*?)```", text, re.DOTALL)
    (tmp_path / "fence.nft").write_text(textwrap.dedent(table))
    result = run(["nft", "--check", "--file", str(tmp_path / "fence.nft")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tcp dport { 9100, 9325 } drop" in table


@pytest.mark.skipif(not netns.available(), reason="needs root and network namespaces")
def test_port_25_reaches_tempalias_over_ipv6_and_ipv4(tmp_path):
    """The appliance's firewall.nft and tempalias.ini on a machine of their own (a network
    namespace) that a client reaches over a virtual cable (a veth pair): its port 25 leads to
    tempalias's SMTP over IPv6 and IPv4, and 2525 stays closed from outside."""
    appliance, client = netns.NetNamespace(), netns.NetNamespace()
    try:
        client.link(appliance, ("fd00:2525::2/64", "192.0.2.2/24"),
                    ("fd00:2525::1/64", "192.0.2.1/24"))
        appliance.run("nft", "-f", str(APPLIANCE / "firewall.nft"))
        ini = APPLIANCE / "tempalias.ini"
        service = ServiceProcess(
            tmp_path, {"TEMPALIAS_SMTP_LISTEN": str(load_config(str(ini), environ={}).smtp_listen),
                       "TEMPALIAS_REDIS_URL": ""},  # the embedded Redis, on a unix socket
            args=("--config", str(ini)), prefix=appliance.prefix).start()
        try:
            for address in ("fd00:2525::1", "192.0.2.1"):
                banner = client.first_line(address, 25)
                assert banner.startswith("220 "), (address, banner)
                straight = client.first_line(address, 2525)
                assert straight.startswith("error:"), (address, straight)
        finally:
            service.stop()
    finally:
        client.close()
        appliance.close()


def test_redis_conf_keeps_every_alias(tmp_path):
    """The appliance's redis.conf, run for real: AOF every second, never evicting, no TCP."""
    socket_path = tmp_path / "redis.sock"
    conf = tmp_path / "redis.conf"
    conf.write_text(rewrite((APPLIANCE / "redis.conf").read_text(), {
        "/var/lib/tempalias/redis/redis.sock": str(socket_path),
        "dir /var/lib/tempalias/redis": f"dir {tmp_path}",
    }))
    redis = Child("redis-server", ["redis-server", str(conf)], tmp_path)
    redis.start()
    try:
        wait_for(lambda: not redis.running() or socket_path.exists(), TIMEOUT,
                 "redis-server's socket")
        assert redis.running(), "redis-server refused the appliance's redis.conf"

        def config_get(name: str) -> str:
            return run(["redis-cli", "-s", str(socket_path), "config", "get", name]
                       ).stdout.split()[-1]

        assert config_get("appendonly") == "yes"
        assert config_get("appendfsync") == "everysec"
        assert config_get("maxmemory-policy") == "noeviction"
        assert config_get("port") == "0"
    finally:
        redis.stop()


# --- first boot


def _firstboot(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return run(["/usr/bin/python3", str(APPLIANCE / "firstboot.py"),
                "--config", str(tmp_path / "etc" / "tempalias.ini"),
                "--fw-cfg", str(tmp_path / "fw_cfg"),
                "--config-drive-label", "TEMPALIAS-TEST-ABSENT",
                "--cmdline", str(tmp_path / "cmdline"),
                "--check-with", sys.executable,
                "--root-ssh", str(tmp_path / "root-ssh"),
                "--no-ssh-host-keys", *extra], cwd=REPO)


@pytest.fixture
def firstboot_dir(tmp_path):
    (tmp_path / "etc").mkdir()
    shutil.copy(APPLIANCE / "tempalias.ini", tmp_path / "etc" / "tempalias.ini")
    (tmp_path / "cmdline").write_text("BOOT_IMAGE=/vmlinuz root=UUID=x ro quiet\n")
    return tmp_path


def _fw_cfg_file(root: Path, name: str, text: str) -> None:
    entry = root / "fw_cfg" / name
    entry.mkdir(parents=True)
    (entry / "raw").write_text(text)


def test_first_boot_makes_a_secret_once_and_applies_operator_settings(firstboot_dir):
    _fw_cfg_file(firstboot_dir, "tempalias.ini",
                 "[tempalias]\ndomains = mail.example.org, example.net\n"
                 "smarthost = 10.0.2.2:2525\npublic_url = https://alias.example.org\n")
    _fw_cfg_file(firstboot_dir, "authorized_keys", "ssh-ed25519 AAAAtest operator\n")
    ini = firstboot_dir / "etc" / "tempalias.ini"

    first = _firstboot(firstboot_dir)
    assert first.returncode == 0, first.stderr
    config = load_config(str(ini), environ={})
    assert config.domains == ("mail.example.org", "example.net")
    assert str(config.smarthost) == "10.0.2.2:2525"
    assert config.public_url == "https://alias.example.org"
    assert config.srs_secret is not None and len(config.srs_secret) == 64
    assert "applied domains, public_url, smarthost" in first.stdout
    assert config.srs_secret not in first.stdout + first.stderr
    assert oct(ini.stat().st_mode & 0o777) == "0o640"
    assert "; largest message accepted, bytes" in ini.read_text()  # comments are kept
    assert (firstboot_dir / "root-ssh" / "authorized_keys").read_text() == \
        "ssh-ed25519 AAAAtest operator\n"

    second = _firstboot(firstboot_dir)
    assert second.returncode == 0, second.stderr
    assert load_config(str(ini), environ={}).srs_secret == config.srs_secret


def _dns_records_step(tmp_path: Path, *step: str, env: dict[str, str] | None = None
                      ) -> subprocess.CompletedProcess:
    """tempalias-dns-records.service's steps; the data directory (the DKIM key) is the test's by
    the environment, which wins over the ini's /var/lib/tempalias."""
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("TEMPALIAS_")}
    environment["TEMPALIAS_DATA_DIR"] = str(tmp_path / "data")
    environment.update(env or {})
    return run(["/usr/bin/python3", str(APPLIANCE / "firstboot.py"),
                "--config", str(tmp_path / "etc" / "tempalias.ini"),
                "--check-with", sys.executable, "--motd", str(tmp_path / "motd"), *step],
               cwd=REPO, env=environment)


def test_first_boot_prints_what_tempalias_check_finds_without_failing(firstboot_dir, dns_zone,
                                                                     redis_server):
    unit = (SYSTEMD / "tempalias-dns-records.service").read_text()
    assert "ExecStartPost=+/usr/sbin/runuser -u tempalias -- /usr/bin/python3 " \
        "/opt/tempalias/src/appliance/firstboot.py --check" in unit
    _fw_cfg_file(firstboot_dir, "tempalias.ini", "[tempalias]\ndomains = boot.example\n")
    assert _firstboot(firstboot_dir).returncode == 0
    local = {"TEMPALIAS_DNS_SERVERS": dns_zone.address, "TEMPALIAS_DNS_TIMEOUT": "1"}

    # the ini's Redis socket (/var/lib/tempalias) is not there: a FAIL, shown, and the boot goes on
    failing = _dns_records_step(firstboot_dir, "--check", env=local)
    assert failing.returncode == 0, failing.stderr
    assert "tempalias check (some FAIL: read what to do)" in failing.stdout
    assert re.search(r"^FAIL redis did not answer", failing.stdout, re.M)
    assert re.search(r"^WARN boot\.example: MX record", failing.stdout, re.M)

    passing = _dns_records_step(firstboot_dir, "--check",
                                env={**local, "TEMPALIAS_REDIS_URL": redis_server.url})
    assert passing.returncode == 0 and "tempalias check (no FAIL)" in passing.stdout
    assert re.search(r"^OK   redis answers", passing.stdout, re.M)


def test_first_boot_makes_the_dkim_key_and_shows_the_dns_records(firstboot_dir):
    _fw_cfg_file(firstboot_dir, "tempalias.ini",
                 "[tempalias]\ndomains = mail.example.org, example.net\n"
                 "mx_hostname = mx.example.org\n")
    motd = firstboot_dir / "motd"
    motd.write_text("Debian GNU/Linux comes with ABSOLUTELY NO WARRANTY.\n")
    records = firstboot_dir / "records.txt"
    unit = (SYSTEMD / "tempalias-dns-records.service").read_text()
    assert "--dns-records /var/lib/tempalias/dns-records.txt" in unit
    assert "ExecStartPost=+/usr/bin/python3 /opt/tempalias/src/appliance/firstboot.py " \
        "--motd-from /var/lib/tempalias/dns-records.txt" in unit

    def boot() -> str:
        assert _firstboot(firstboot_dir).returncode == 0
        shown = _dns_records_step(firstboot_dir, "--dns-records", str(records))
        assert shown.returncode == 0, shown.stderr
        into_motd = _dns_records_step(firstboot_dir, "--motd-from", str(records))
        assert into_motd.returncode == 0, into_motd.stderr
        return shown.stdout.split("the DNS records to publish\n", 1)[1]

    shown = boot()
    key_file = firstboot_dir / "data" / "dkim.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    for domain in ("mail.example.org", "example.net"):
        assert f"{domain}. IN MX 10 mx.example.org." in shown
        assert f'tempalias._domainkey.{domain}. IN TXT "v=DKIM1; k=rsa; p=' in shown
        assert f'_dmarc.{domain}. IN TXT "v=DMARC1;' in shown
    text = motd.read_text()
    assert text.startswith("Debian GNU/Linux comes with ABSOLUTELY NO WARRANTY.\n")
    assert shown.strip() in text and "tempalias dns-records DOMAIN" in text

    assert boot() == shown  # a later boot: the same key, the motd's block replaced
    assert motd.read_text() == text

    operator_ini = firstboot_dir / "fw_cfg" / "tempalias.ini" / "raw"
    operator_ini.write_text("[tempalias]\ndomains = other.example\n")
    assert "other.example. IN MX" in boot()
    assert "mail.example.org" not in motd.read_text()
    assert motd.read_text().startswith("Debian GNU/Linux comes with ABSOLUTELY NO WARRANTY.\n")


def test_first_boot_reads_the_kernel_command_line_without_fw_cfg(firstboot_dir):
    (firstboot_dir / "cmdline").write_text(
        "root=UUID=x ro tempalias.domains=cmdline.example tempalias.smarthost=192.0.2.1:25\n")
    result = _firstboot(firstboot_dir)
    assert result.returncode == 0, result.stderr
    config = load_config(str(firstboot_dir / "etc" / "tempalias.ini"), environ={})
    assert config.domains == ("cmdline.example",)
    assert str(config.smarthost) == "192.0.2.1:25"


def test_first_boot_refuses_a_bad_setting_and_keeps_the_file(firstboot_dir):
    ini = firstboot_dir / "etc" / "tempalias.ini"
    before = ini.read_text()
    _fw_cfg_file(firstboot_dir, "tempalias.ini", "[tempalias]\nmax_days = 0\n")
    result = _firstboot(firstboot_dir)
    assert result.returncode == 1
    assert "max_days" in result.stderr and "Traceback" not in result.stderr
    assert ini.read_text() == before
    assert [path.name for path in ini.parent.iterdir()] == ["tempalias.ini"]


@pytest.fixture
def config_drive(tmp_path):
    """A real config drive: an ext4 file system with a label of its own on a loop device,
    holding an operator's tempalias.ini. Yields the label."""
    if os.geteuid() != 0 or not shutil.which("losetup") or not shutil.which("mke2fs"):
        pytest.skip("a loop device needs root, losetup and mke2fs")
    label = f"TA-{secrets.token_hex(4)}"
    files = tmp_path / "drive"
    files.mkdir()
    (files / "tempalias.ini").write_text("[tempalias]\ndomains = drive.example\n")
    image = tmp_path / "drive.img"
    with open(image, "wb") as handle:
        handle.truncate(4 * 1024 * 1024)
    run(["mke2fs", "-q", "-t", "ext4", "-L", label, "-d", str(files), str(image)]
        ).check_returncode()
    attached = run(["losetup", "--find", "--show", str(image)])
    if attached.returncode != 0:
        pytest.skip(f"no loop device: {attached.stderr.strip()}")
    try:
        # the kernel lists a new loop device a moment after losetup returns
        wait_for(lambda: run(["blkid", "-c", "/dev/null", "-L", label]).returncode == 0,
                 TIMEOUT, f"the loop device labelled {label}")
        yield label
    finally:
        run(["losetup", "--detach", attached.stdout.strip()])


def test_first_boot_reads_a_config_drive(firstboot_dir, config_drive):
    result = _firstboot(firstboot_dir, "--config-drive-label", config_drive)
    assert result.returncode == 0, result.stderr
    config = load_config(str(firstboot_dir / "etc" / "tempalias.ini"), environ={})
    assert config.domains == ("drive.example",)


def test_config_drive_is_mounted_without_devices_setuid_or_programs(config_drive):
    """Whoever can attach a disk writes the config drive: its device nodes, set-uid files and
    programs must mean nothing while it is mounted."""
    spec = importlib.util.spec_from_file_location("firstboot", APPLIANCE / "firstboot.py")
    firstboot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(firstboot)
    with firstboot.config_drive(config_drive) as mountpoint:
        assert mountpoint is not None
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            mounts = {fields[4]: set(fields[5].split(","))
                      for fields in (line.split() for line in handle)}
        options = mounts[os.path.realpath(mountpoint)]
    assert {"ro", "nosuid", "nodev", "noexec"} <= options, options


# --- nginx, supervisord and tempalias, run for real on loopback ports


@dataclass
class Nginx:
    port: int
    child: Child
    prefix: Path

    def stop(self) -> None:
        self.child.stop(signal.SIGQUIT, TIMEOUT)  # a graceful shutdown


def nginx_files(prefix: Path, upstream_port: int, src_root: Path,
                tls: tuple[Path, Path] | None = None) -> tuple[Path, int, int | None]:
    """The appliance's nginx.conf (Debian's, sized for the appliance) including the appliance's
    site, both with test ports and paths. Returns (conf, http port, https port)."""
    for name in ("tmp", "etc/nginx-tls.d", "logs"):
        (prefix / name).mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    https_port = None
    site = rewrite((APPLIANCE / "nginx" / "tempalias.conf").read_text(), {
        "listen 80 default_server;": f"listen 127.0.0.1:{port} default_server;",
        "listen [::]:80 default_server;":
            f"listen [::1]:{port} default_server;" if netns.has_ipv6_loopback() else "",
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{upstream_port};",
        "root /opt/tempalias/src;": f"root {src_root};",
        "/etc/tempalias/nginx-tls.d/": f"{prefix}/etc/nginx-tls.d/",
    })
    if tls is not None:
        https_port = free_loopback_port()
        snippet = rewrite((APPLIANCE / "nginx" / "tls.conf").read_text(), {
            "listen 443 ssl": f"listen 127.0.0.1:{https_port} ssl",
            "listen [::]:443 ssl http2 default_server;": "",
            "/etc/tempalias/tls/fullchain.pem": str(tls[0]),
            "/etc/tempalias/tls/privkey.pem": str(tls[1]),
        })
        (prefix / "etc" / "nginx-tls.d" / "tls.conf").write_text(snippet)
    (prefix / "site.conf").write_text(site)
    temp = prefix / "tmp"
    conf = prefix / "nginx.conf"
    conf.write_text(rewrite((APPLIANCE / "nginx" / "nginx.conf").read_text(), {
        "pid /run/nginx.pid;": f"pid {prefix}/nginx.pid;",
        "error_log /var/log/nginx/error.log;": f"error_log {prefix}/logs/error.log info;",
        "access_log /var/log/nginx/access.log;": f"access_log {prefix}/logs/access.log;",
        "include /etc/nginx/conf.d/*.conf;": "\n".join(
            f"{kind}_temp_path {temp}/{kind.split('_')[0]};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        "include /etc/nginx/sites-enabled/*;": f"include {prefix}/site.conf;",
    }))
    return conf, port, https_port


def nginx_command(conf: Path, prefix: Path, *extra: str) -> list[str]:
    """nginx in the foreground as one process (which keeps the test's user: the test's files
    are not www-data's to read), logging under ``prefix`` from the start."""
    return ["nginx", *extra, "-p", str(prefix), "-c", str(conf),
            "-e", str(prefix / "logs" / "error.log"), "-g", "daemon off; master_process off;"]


def start_nginx(prefix: Path, upstream_port: int, src_root: Path) -> Nginx:
    conf, port, _ = nginx_files(prefix, upstream_port, src_root)
    nginx = Nginx(port, Child("nginx", nginx_command(conf, prefix), prefix), prefix)
    nginx.child.start()

    def listening():
        if not nginx.child.running():
            raise AssertionError("nginx exited:\n" + (prefix / "logs" / "error.log").read_text())
        return port_answers(port)

    wait_for(listening, TIMEOUT, "nginx to listen")
    return nginx


def nginx_test(conf: Path, prefix: Path) -> subprocess.CompletedProcess:
    return run(nginx_command(conf, prefix, "-t"))


def test_nginx_accepts_the_site(tmp_path):
    conf, _, _ = nginx_files(tmp_path, free_loopback_port(), REPO)
    result = nginx_test(conf, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


@pytest.fixture
def self_signed(tmp_path):
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)]).check_returncode()
    return cert, key


def test_nginx_serves_tls_with_the_operators_certificate(tmp_path, self_signed, service):
    prefix = tmp_path / "nginx"
    conf, _, https_port = nginx_files(prefix, service.ports["http"], REPO, tls=self_signed)
    assert nginx_test(conf, prefix).returncode == 0
    nginx = Nginx(https_port, Child("nginx", nginx_command(conf, prefix), prefix), prefix)
    nginx.child.start()
    try:
        wait_for(lambda: not nginx.child.running() or port_answers(https_port), TIMEOUT,
                 "nginx to listen on TLS")
        context = ssl.create_default_context(cafile=str(self_signed[0]))
        status, _, body = http_request(https_port, "GET", "/healthz", https_context=context)
        assert status == 200 and json.loads(body) == {"status": "ok"}
    finally:
        nginx.stop()


@dataclass
class Supervised:
    conf: Path
    child: Child
    http_port: int
    log_dir: Path

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return run(["supervisorctl", "-c", str(self.conf), *args])

    def tempalias_pid(self) -> int:
        answer = self.ctl("pid", "tempalias").stdout.strip()
        return int(answer) if answer.isdigit() and answer != "0" else 0

    def stop(self) -> int | None:
        return self.child.stop(signal.SIGTERM, TIMEOUT)


def start_supervised(tmp_path: Path, redis_url: str) -> Supervised:
    """The appliance's supervisord.conf, running the appliance's example tempalias.ini; only
    paths and the listening addresses (through TEMPALIAS_* variables) are the test's."""
    for name in ("log", "run", "data"):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
    conf = tmp_path / "supervisord.conf"
    conf.write_text(rewrite((APPLIANCE / "supervisor" / "supervisord.conf").read_text(), {
        "/opt/tempalias/venv/bin/": f"{VENV_BIN}/",
        "/etc/tempalias/tempalias.ini": str(APPLIANCE / "tempalias.ini"),
        "/var/log/tempalias": str(tmp_path / "log"),
        "/run/tempalias": str(tmp_path / "run"),
        "directory = /var/lib/tempalias": f"directory = {tmp_path / 'data'}",
    }))
    http_port = free_loopback_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TEMPALIAS_")},
           "TEMPALIAS_HTTP_LISTEN": f"127.0.0.1:{http_port}",
           "TEMPALIAS_SMTP_LISTEN": "127.0.0.1:0",
           "TEMPALIAS_METRICS_LISTEN": "127.0.0.1:0",
           "TEMPALIAS_REDIS_URL": redis_url,
           "TEMPALIAS_DATA_DIR": str(tmp_path / "data"),
           "TEMPALIAS_DOMAINS": "tempalias.test"}
    supervised = Supervised(conf, Child("supervisord", ["supervisord", "-c", str(conf)], tmp_path,
                                        env), http_port, tmp_path / "log")
    supervised.child.start()

    def healthy():
        if not supervised.child.running():
            raise AssertionError("supervisord exited")
        return port_answers(http_port)

    try:
        wait_for(healthy, TIMEOUT, "tempalias under supervisord")
    except AssertionError:
        supervised.stop()
        logs = "\n".join(path.read_text() for path in (tmp_path / "log").glob("*.log"))
        raise AssertionError(f"tempalias did not start under supervisord:\n{logs}") from None
    return supervised


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_server):
    """supervisord running tempalias, and nginx in front of it with a copy of static/ that also
    holds a hashed asset (which only nginx can serve: tempalias serves the repo's static/)."""
    root = tmp_path_factory.mktemp("stack")
    src = root / "src"
    shutil.copytree(REPO / "static", src / "static")
    (src / "static" / "app.0123abcd.js").write_text("console.log('tempalias');\n" * 40)
    supervised = start_supervised(root / "supervisor", redis_server.url)
    try:
        nginx = start_nginx(root / "nginx", supervised.http_port, src)
    except BaseException:
        supervised.stop()
        raise
    yield nginx, supervised, src
    nginx.stop()
    supervised.stop()


def test_api_is_proxied(stack):
    nginx, _, _ = stack
    status, headers, body = http_request(
        nginx.port, "POST", "/api/v1/aliases", json.dumps({"target": "owner@example.org"}).encode(),
        {"Content-Type": "application/json"})
    assert status == 201, body
    created = json.loads(body)
    assert created["address"].endswith("@tempalias.test")
    status, _, body = http_request(nginx.port, "GET", f"/api/v1/aliases/{created['id']}",
                                   headers={"Authorization": f"Bearer {created['token']}"})
    assert status == 200 and json.loads(body)["address"] == created["address"]
    status, _, body = http_request(nginx.port, "GET", "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}


@pytest.mark.skipif(not netns.has_ipv6_loopback(), reason="this machine has no ::1")
def test_api_is_proxied_over_ipv6(stack):
    nginx, _, _ = stack
    status, _, body = http_request(nginx.port, "GET", "/healthz", host="::1")
    assert status == 200 and json.loads(body) == {"status": "ok"}


def test_json_is_compressed(stack):
    nginx, supervised, _ = stack
    _, _, plain = http_request(supervised.http_port, "GET", "/api/openapi.json")
    status, headers, body = http_request(nginx.port, "GET", "/api/openapi.json",
                                         headers={"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers.get("content-encoding") == "gzip"
    assert "Accept-Encoding" in headers.get("vary", "")
    assert len(body) < len(plain)
    assert json.loads(gzip.decompress(body)) == json.loads(plain)


def test_static_files_are_served_by_nginx_with_cache_headers(stack):
    nginx, _, src = stack
    status, headers, body = http_request(nginx.port, "GET", "/static/app.0123abcd.js",
                                         headers={"Accept-Encoding": "gzip"})
    assert status == 200
    assert "immutable" in headers["cache-control"] and "max-age=31536000" in headers["cache-control"]
    assert headers.get("content-encoding") == "gzip"  # "application/javascript; charset=utf-8"
    assert headers["content-type"].endswith("charset=utf-8")
    assert gzip.decompress(body) == (src / "static" / "app.0123abcd.js").read_bytes()

    status, headers, body = http_request(nginx.port, "GET", "/static/index.html")
    assert status == 200 and body == (src / "static" / "index.html").read_bytes()
    assert headers["cache-control"] == "public, max-age=600"
    assert headers["x-content-type-options"] == "nosniff"


def test_static_names_not_on_disk_go_to_tempalias(stack):
    """Generated files under /static/ (none yet) would come from tempalias: it answers, in JSON."""
    nginx, _, _ = stack
    status, headers, body = http_request(nginx.port, "GET", "/static/no-such-file.js")
    assert status == 404
    assert headers["content-type"].startswith("application/json")
    assert set(json.loads(body)) >= {"error", "description"}


def test_oversized_request_bodies_stop_at_nginx(stack):
    nginx, _, _ = stack
    status, _, _ = http_request(nginx.port, "POST", "/api/v1/aliases", b"x" * (200 * 1024),
                                {"Content-Type": "application/json"})
    assert status == 413


def test_supervisor_restarts_tempalias_when_it_dies(stack):
    nginx, supervised, _ = stack
    old_pid = supervised.tempalias_pid()
    assert old_pid > 0, supervised.ctl("status").stdout
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: supervised.tempalias_pid() not in (0, old_pid), TIMEOUT,
             "supervisord to restart tempalias")
    wait_for(lambda: http_request(nginx.port, "GET", "/healthz")[0] == 200, TIMEOUT,
             "the restarted tempalias to answer through nginx")


def test_supervisor_stops_tempalias_with_term_and_a_drain(tmp_path, redis_server):
    supervised = start_supervised(tmp_path, redis_server.url)
    pid = supervised.tempalias_pid()
    assert pid > 0
    assert supervised.stop() == 0
    assert not Path(f"/proc/{pid}").exists()
    log = (supervised.log_dir / "tempalias.log").read_text()
    assert "received SIGTERM" in log and "stopped" in log


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers with the request headers it got, as JSON with a charset parameter."""

    def do_GET(self):
        body = json.dumps({"headers": dict(self.headers.items()),
                           "padding": "x" * 1024}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def echo_behind_nginx(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    nginx = start_nginx(tmp_path / "nginx", server.server_address[1], REPO)
    yield nginx
    nginx.stop()
    server.shutdown()
    server.server_close()
    thread.join(TIMEOUT)


def test_client_address_is_passed_through_and_cannot_be_forged(echo_behind_nginx):
    status, headers, body = http_request(
        echo_behind_nginx.port, "GET", "/api/v1/anything",
        headers={"X-Forwarded-For": "203.0.113.9", "Accept-Encoding": "gzip"})
    assert status == 200
    assert headers.get("content-encoding") == "gzip"  # "application/json; charset=utf-8" too
    seen = json.loads(gzip.decompress(body))["headers"]
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Real-IP"] == "127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"


# --- slow clients (issue 11, point 2): one address must not take nginx from everyone else

ATTACKER = "127.0.0.2"  # a loopback address of its own; the probes come from 127.0.0.1
SLOW_CLIENTS = 2000
ATTACK_SECONDS = 3.0
PROBE_INTERVAL = 0.05
HALF_A_HEAD = b"GET /healthz HTTP/1.1\r\nHost: tempalias.test\r\nUser-Agent: slow"


def ensure_open_files(needed: int) -> None:
    """Raise this process's (and so its children's) open-file limit to ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class SlowClients:
    """``count`` connections from ``source`` that each send half a request head and then wait,
    reconnecting whenever the server cuts one off: the attack of issue 11, one thread, one
    selector, non-blocking connects (a full accept queue must not stall it)."""

    def __init__(self, port: int, source: str, count: int) -> None:
        self.port, self.source, self.count = port, source, count
        self.arrived = 0  # of the ``count``, how many got through once (not reconnects)
        self.held = 0  # connected, half a head sent, not cut off yet
        self._selector = selectors.DefaultSelector()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "SlowClients":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(TIMEOUT)

    def _connect(self, first: bool) -> bool:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # the port is picked with the destination known: reconnecting never runs out of them
            sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
            sock.bind((self.source, 0))
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", self.port))
        except OSError:
            sock.close()
            return False
        self._selector.register(sock, selectors.EVENT_WRITE, "first" if first else "again")
        return True

    def _run(self) -> None:
        missing = {"first": self.count, "again": 0}
        try:
            while not self._stopping.is_set():
                for kind in ("first", "again"):
                    while missing[kind] and self._connect(kind == "first"):
                        missing[kind] -= 1
                for key, _ in self._selector.select(timeout=0.05):
                    sock, kind = key.fileobj, key.data
                    if kind != "held" and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        self.arrived += kind == "first"
                        try:
                            sock.send(HALF_A_HEAD)
                        except OSError:
                            pass  # cut off already: the next select says so
                        self._selector.modify(sock, selectors.EVENT_READ, "held")
                        self.held += 1
                        continue
                    # refused, or an answer (408) or a close while held: cut off; reconnect
                    if kind == "held":
                        self.held -= 1
                    self._selector.unregister(sock)
                    sock.close()
                    missing["first" if kind == "first" else "again"] += 1
        finally:
            for key in list(self._selector.get_map().values()):
                key.fileobj.close()
            self._selector.close()


def probe(port: int) -> str | None:
    """GET /healthz through nginx from 127.0.0.1; None when answered 200 within a second."""
    started = time.monotonic()
    try:
        status, _, _ = http_request(port, "GET", "/healthz", timeout=1.0)
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    elapsed = time.monotonic() - started
    if status != 200 or elapsed > 1.0:
        return f"{status} after {elapsed:.2f} s"
    return None


def test_slow_clients_from_one_address_leave_nginx_answering_everyone_else(tmp_path, service):
    """2,000 connections from one address, each holding half a request head and reconnecting
    when cut off; for the seconds the attack lasts, every probe from another address is answered
    within a second. (An overwhelmed nginx does not fail at once: it starts cutting connections
    off, the probes' among them, as the reconnections pile up.)"""
    ensure_open_files(SLOW_CLIENTS + 1000)
    nginx = start_nginx(tmp_path / "nginx", service.ports["http"], REPO)
    slow = SlowClients(nginx.port, ATTACKER, SLOW_CLIENTS).start()
    try:
        wait_for(lambda: slow.arrived >= SLOW_CLIENTS, TIMEOUT,
                 f"{SLOW_CLIENTS} slow connections from {ATTACKER}")
        attack_ends = time.monotonic() + ATTACK_SECONDS
        results = []
        while time.monotonic() < attack_ends:
            results.append(probe(nginx.port))
            time.sleep(PROBE_INTERVAL)  # pacing, as a monitor's probes are: not a wait
        failures = [failure for failure in results if failure]
        assert not failures, (f"{len(failures)} of {len(results)} probes failed while "
                              f"{slow.held} slow connections were open: {failures[:3]}")
    finally:
        slow.stop()
        nginx.stop()


def hold_a_request(port: int, source: str) -> socket.socket:
    """A request whose head is whole and whose body never comes: nginx holds it (a request
    counts against limit_conn once its head is in, unlike a slow head)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT,
                                    source_address=(source, 0))
    sock.sendall(b"POST /api/v1/aliases HTTP/1.1\r\nHost: tempalias.test\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    return sock


def test_one_address_cannot_hold_more_requests_than_its_share(tmp_path, service):
    share = int(re.search(r"limit_conn tempalias_per_address (\d+);",
                          (APPLIANCE / "nginx" / "tempalias.conf").read_text()).group(1))
    nginx = start_nginx(tmp_path / "nginx", service.ports["http"], REPO)
    held = [hold_a_request(nginx.port, ATTACKER) for _ in range(share)]
    try:
        def attacker_status(wanted: int):
            answer = http_request(nginx.port, "GET", "/healthz", source=ATTACKER)
            return answer if answer[0] == wanted else None

        _, headers, body = wait_for(lambda: attacker_status(429), TIMEOUT,
                                    f"a request beyond {ATTACKER}'s {share} to be refused")
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["error"] == "rate-limited" and json.loads(body)["description"]
        status, _, _ = http_request(nginx.port, "GET", "/healthz", source="127.0.0.3")
        assert status == 200  # another address is not affected

        held.pop().close()  # one request ends: the address has room for one again
        wait_for(lambda: attacker_status(200), TIMEOUT, f"{ATTACKER} to be answered again")
    finally:
        for sock in held:
            sock.close()
        nginx.stop()
