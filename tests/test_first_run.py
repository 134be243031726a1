"""A new user's first five minutes: `make run` with no settings, an alias, a message, the Maildir.

The service is started the way the Makefile's `run` target does (`$(BIN)/tempalias serve`, no
settings, so the embedded redis-server, the default domain and a Maildir under ./var), from a
directory of its own. The only variables set pick free ports, so that the test never meets a
`make run` on 8080 and 2525.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from harness.processes import ServiceProcess, wait_for

# $(BIN)/tempalias of the Makefile: the console script beside the interpreter running the tests.
MAKE_RUN_COMMAND = (str(Path(sys.executable).with_name("tempalias")),)
SWAKS_BUDGET = 60.0
DELIVERY_TIMEOUT = 30.0


def test_make_run_defaults_deliver_a_message_to_a_new_alias_into_the_maildir(tmp_path):
    service = ServiceProcess(tmp_path, {}, command=MAKE_RUN_COMMAND, test_settings=False).start()
    try:
        created = requests.post(f"{service.http_url}/api/v1/aliases", timeout=10,
                                json={"target": "me@example.org", "uses": 5})
        assert created.status_code == 201, created.text
        address = created.json()["address"]

        body = f"first message to {address}"
        sent = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{service.smtp_port}", "--to", address,
             "--body", body, "--timeout", "30"],  # swaks's own sender: user@host-name
            capture_output=True, text=True, timeout=SWAKS_BUDGET)
        assert sent.returncode == 0, sent.stdout + sent.stderr

        new = tmp_path / "var" / "Maildir" / "new"

        def delivered():
            files = list(new.iterdir()) if new.is_dir() else []
            return [path for path in files if body.encode() in path.read_bytes()]

        [message] = wait_for(delivered, DELIVERY_TIMEOUT, "the message in ./var/Maildir/new")
        assert b"Delivered-To: me@example.org\r\n" in message.read_bytes()
    finally:
        assert service.stop() == 0
