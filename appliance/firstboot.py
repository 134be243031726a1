#!/usr/bin/python3
"""First boot of the appliance: per-instance secrets and the operator's settings.

The image carries no secrets, so one image serves every installation. At boot (every boot;
only the first one makes secrets) this script, run by tempalias-configure.service before
tempalias starts:

- makes the SRS secret (``srs_secret`` in /etc/tempalias/tempalias.ini) if there is none, and the
  SSH host keys if there are none;
- with ``--dns-records PATH`` (tempalias-dns-records.service, as the tempalias user, after the
  settings are in place) instead: makes the DKIM key in the data directory if there is none and
  prints the DNS records each configured domain publishes (``tempalias dns-records --no-check
  DOMAIN``: MX, SPF, DKIM, DMARC) on the console and into PATH; with ``--motd-from PATH`` (the
  same unit's root step) puts them into /etc/motd, where the operator sees them at login.
  Without network there, ``tempalias dns-records DOMAIN`` checks them later; with ``--check``
  (the same unit's last step, as the tempalias user with network) prints what ``tempalias
  check`` finds on the console and exits 0 whatever it finds: a FAIL is for the operator to
  read, not a reason to fail the boot;
- reads the operator's settings, a ``[tempalias]`` INI section with the same keys as
  tempalias.ini (domains, smarthost, public_url, ...), from the first of these that exists:
    1. qemu's firmware config: ``-fw_cfg name=opt/tempalias/tempalias.ini,file=PATH``
    2. a config drive: a file system labelled ``TEMPALIAS`` holding ``tempalias.ini``
    3. the kernel command line: ``tempalias.KEY=VALUE`` words
  and writes them into /etc/tempalias/tempalias.ini in place (comments are kept). An
  ``authorized_keys`` file beside the operator's ``tempalias.ini`` (fw_cfg name
  ``opt/tempalias/authorized_keys``) becomes root's, for SSH logins.

The result is checked with tempalias's own parser before it replaces the file; a bad operator
setting leaves the previous file in place and fails the unit with the parser's message.
Standard library only: it runs with Debian's python3.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import grp
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from typing import Iterator

SECTION = "tempalias"
CONFIG_DRIVE_LABEL = "TEMPALIAS"
FW_CFG_DIR = "/sys/firmware/qemu_fw_cfg/by_name/opt/tempalias"
# The config drive is the operator's or anyone's who can attach a disk: only its files are read.
CONFIG_DRIVE_MOUNT_OPTIONS = "ro,nosuid,nodev,noexec"
MOTD_START = "=== tempalias: DNS records to publish (check: tempalias dns-records DOMAIN) ==="
MOTD_END = "=== end of tempalias's DNS records ==="
_KEY_LINE = re.compile(r"^\s*[;#]?\s*([a-z][a-z0-9_]*)\s*[=:]")


class FirstBootError(Exception):
    """The operator's settings cannot be used; the message says which and why."""


def parse_operator_ini(text: str, where: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=where)
    except configparser.Error as exc:
        raise FirstBootError(f"{where}: {exc.message.splitlines()[0]}") from None
    if not parser.has_section(SECTION):
        raise FirstBootError(f"{where}: no [{SECTION}] section")
    return {key: value.strip() for key, value in parser.items(SECTION)}


def from_cmdline(text: str) -> dict[str, str]:
    """``tempalias.domains=example.org tempalias.smarthost=10.0.0.1:25`` -> a dict."""
    values = {}
    for word in text.split():
        if word.startswith(SECTION + ".") and "=" in word:
            key, _, value = word[len(SECTION) + 1:].partition("=")
            values[key.lower()] = value
    return values


@contextlib.contextmanager
def config_drive(label: str) -> Iterator[str | None]:
    """Mount the file system labelled ``label`` read-only for the block; None if there is none."""
    device = None
    if shutil.which("blkid"):
        # "-c /dev/null": probe the devices as they are now, not as blkid's cache remembers them
        found = subprocess.run(["blkid", "-c", "/dev/null", "-L", label], capture_output=True,
                               text=True, timeout=30, check=False)
        device = found.stdout.strip() or None
    if device is None:
        yield None
        return
    mountpoint = tempfile.mkdtemp(prefix="tempalias-config-")
    try:
        subprocess.run(["mount", "-o", CONFIG_DRIVE_MOUNT_OPTIONS, device, mountpoint],
                       check=True, timeout=60)
        try:
            yield mountpoint
        finally:
            subprocess.run(["umount", mountpoint], check=False, timeout=60)
    finally:
        os.rmdir(mountpoint)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def operator_settings(args: argparse.Namespace) -> tuple[dict[str, str], str | None, str]:
    """(settings, authorized_keys text or None, where they came from)."""
    ini = _read(os.path.join(args.fw_cfg, "tempalias.ini", "raw"))
    if ini is not None:
        keys = _read(os.path.join(args.fw_cfg, "authorized_keys", "raw"))
        return parse_operator_ini(ini, "fw_cfg opt/tempalias/tempalias.ini"), keys, "fw_cfg"
    with config_drive(args.config_drive_label) as mountpoint:
        if mountpoint is not None:
            ini = _read(os.path.join(mountpoint, "tempalias.ini"))
            keys = _read(os.path.join(mountpoint, "authorized_keys"))
            settings = parse_operator_ini(ini, "config drive tempalias.ini") if ini else {}
            return settings, keys, f"config drive {args.config_drive_label}"
    cmdline = _read(args.cmdline) or ""
    return from_cmdline(cmdline), None, "kernel command line"


def set_keys(text: str, values: dict[str, str]) -> str:
    """Set each key in the [tempalias] section in place: an active or commented-out line of that
    key becomes ``key = value``; a key with no line is appended to the section."""
    lines = text.splitlines()
    section_start = next((i for i, line in enumerate(lines)
                          if line.strip() == f"[{SECTION}]"), None)
    if section_start is None:
        lines += ["", f"[{SECTION}]"]
        section_start = len(lines) - 1
    section_end = next((i for i in range(section_start + 1, len(lines))
                        if lines[i].lstrip().startswith("[")), len(lines))
    remaining = dict(values)
    for index in range(section_start + 1, section_end):
        match = _KEY_LINE.match(lines[index])
        if match and match.group(1) in remaining:
            key = match.group(1)
            lines[index] = f"{key} = {remaining.pop(key)}".rstrip()
    insert_at = section_end
    for key, value in remaining.items():
        lines.insert(insert_at, f"{key} = {value}".rstrip())
        insert_at += 1
    return "\n".join(lines) + "\n"


def active_value(text: str, key: str) -> str | None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    if parser.has_section(SECTION) and parser.has_option(SECTION, key):
        return parser.get(SECTION, key).strip() or None
    return None


def check_with_tempalias(python: str, path: str) -> None:
    """Let tempalias's own parser judge the file, so that its error message reaches the log."""
    if not os.path.exists(python):
        return
    result = subprocess.run(
        [python, "-c", "import sys; from tempalias.config import load_config, ConfigError\n"
                       "try:\n    load_config(sys.argv[1], {})\n"
                       "except ConfigError as exc:\n    sys.exit(str(exc))", path],
        capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise FirstBootError(result.stderr.strip() or f"{path} was refused by tempalias")


def write_config(path: str, text: str, python: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, candidate = tempfile.mkstemp(prefix=".tempalias.ini.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(candidate, 0o640)
        try:
            os.chown(candidate, 0, grp.getgrnam("tempalias").gr_gid)
        except (KeyError, PermissionError):
            pass
        check_with_tempalias(python, candidate)
        os.replace(candidate, path)
    except BaseException:
        if os.path.exists(candidate):
            os.unlink(candidate)
        raise


def install_authorized_keys(text: str, ssh_dir: str) -> None:
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    path = os.path.join(ssh_dir, "authorized_keys")
    with open(path + ".new", "w", encoding="utf-8") as handle:
        handle.write(text if text.endswith("\n") else text + "\n")
    os.chmod(path + ".new", 0o600)
    os.replace(path + ".new", path)


def make_host_keys(ssh_config_dir: str) -> bool:
    if not os.path.isdir(ssh_config_dir) or shutil.which("ssh-keygen") is None:
        return False
    if any(name.startswith("ssh_host_") for name in os.listdir(ssh_config_dir)):
        return False
    subprocess.run(["ssh-keygen", "-A"], check=True, timeout=120)
    return True


def dns_records(python: str, config: str, domains: list[str]) -> str:
    """What ``tempalias dns-records --no-check`` prints for each domain; run as the service's
    user, so that the DKIM key it makes on the first boot is the service's own."""
    shown = []
    for domain in domains:
        result = subprocess.run(
            [python, "-m", "tempalias", "--config", config, "dns-records", "--no-check", domain],
            capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise FirstBootError(f"DNS records of {domain}: "
                                 f"{result.stderr.strip() or 'tempalias dns-records failed'}")
        shown.append(f"; {domain}\n{result.stdout.rstrip()}\n")
    return "\n".join(shown)


def without_motd_block(motd: str) -> str:
    """``motd`` without the block an earlier boot wrote, and without its trailing blank lines."""
    lines = motd.splitlines()
    if MOTD_START in lines and MOTD_END in lines[lines.index(MOTD_START):]:
        start = lines.index(MOTD_START)
        del lines[start:lines.index(MOTD_END, start) + 1]
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def with_motd_block(motd: str, block: str) -> str:
    """``motd`` with our block in place of the one an earlier boot wrote (or appended)."""
    kept = without_motd_block(motd)
    return kept + ("\n" if kept else "") + "\n".join(
        [MOTD_START, *block.rstrip().splitlines(), MOTD_END]) + "\n"


def show_dns_records(args: argparse.Namespace) -> int:
    """The records on the console and into ``args.dns_records`` (empty for the local-only
    default domain, which publishes nothing)."""
    domains = [domain.strip()
               for domain in (active_value(_read(args.config) or "", "domains") or "").split(",")
               if domain.strip()]
    if domains and not os.path.exists(args.check_with):
        raise FirstBootError(f"{args.check_with} is missing: run provision.sh first")
    block = dns_records(args.check_with, args.config, domains) if domains else ""
    if block:
        print(f"tempalias-firstboot: the DNS records to publish\n{block}", flush=True)
    with open(args.dns_records, "w", encoding="utf-8") as handle:
        handle.write(block)
    return 0


def check(args: argparse.Namespace) -> int:
    """``tempalias check`` on the console; 0 whatever it finds (or if it cannot run)."""
    try:
        result = subprocess.run([args.check_with, "-m", "tempalias", "--config", args.config,
                                 "check"], capture_output=True, text=True, timeout=300,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"tempalias-firstboot: tempalias check did not run: {exc}", flush=True)
        return 0
    verdict = "some FAIL: read what to do" if result.returncode else "no FAIL"
    print(f"tempalias-firstboot: tempalias check ({verdict})\n{result.stdout.rstrip()}"
          + (f"\n{result.stderr.rstrip()}" if result.stderr.strip() else ""), flush=True)
    return 0


def motd_from(args: argparse.Namespace) -> int:
    """The records ``show_dns_records`` wrote, in place of the motd's earlier block."""
    block = _read(args.motd_from) or ""
    motd = _read(args.motd) or ""
    updated = with_motd_block(motd, block) if block.strip() else without_motd_block(motd)
    if updated != motd:
        with open(args.motd, "w", encoding="utf-8") as handle:  # in place: a bind-mounted file
            handle.write(updated)
    return 0


def run(args: argparse.Namespace) -> int:
    current = _read(args.config)
    if current is None:
        raise FirstBootError(f"{args.config} is missing: run provision.sh first")
    settings, authorized_keys, where = operator_settings(args)
    changes = {key: value for key, value in settings.items()
               if key != "srs_secret" or value}
    if active_value(current, "srs_secret") is None and "srs_secret" not in changes:
        changes["srs_secret"] = secrets.token_hex(32)
        print("tempalias-firstboot: made a new SRS secret", flush=True)
    if changes:
        updated = set_keys(current, changes)
        if updated != current:
            write_config(args.config, updated, args.check_with)
        shown = sorted(key for key in changes if key not in ("srs_secret", "smarthost_password"))
        if shown:
            print(f"tempalias-firstboot: applied {', '.join(shown)} from {where}", flush=True)
    if authorized_keys:
        install_authorized_keys(authorized_keys, args.root_ssh)
        print(f"tempalias-firstboot: installed root's authorized_keys from {where}", flush=True)
    if args.ssh_host_keys and make_host_keys(args.ssh_config):
        print("tempalias-firstboot: made SSH host keys", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="/etc/tempalias/tempalias.ini")
    parser.add_argument("--fw-cfg", default=FW_CFG_DIR)
    parser.add_argument("--config-drive-label", default=CONFIG_DRIVE_LABEL)
    parser.add_argument("--cmdline", default="/proc/cmdline")
    parser.add_argument("--check-with", default="/opt/tempalias/venv/bin/python",
                        help="the Python that can import tempalias, to validate the result")
    parser.add_argument("--root-ssh", default="/root/.ssh")
    parser.add_argument("--ssh-config", default="/etc/ssh")
    parser.add_argument("--no-ssh-host-keys", dest="ssh_host_keys", action="store_false")
    parser.add_argument("--dns-records", metavar="PATH",
                        help="instead: make the DKIM key, print the DNS records, write them here")
    parser.add_argument("--motd-from", metavar="PATH",
                        help="instead: put the DNS records written by --dns-records into --motd")
    parser.add_argument("--check", action="store_true",
                        help="instead: print what tempalias check finds; exit 0 regardless")
    parser.add_argument("--motd", default="/etc/motd")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.dns_records:
            return show_dns_records(args)
        if args.motd_from:
            return motd_from(args)
        if args.check:
            return check(args)
        return run(args)
    except FirstBootError as exc:
        print(f"tempalias-firstboot: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
