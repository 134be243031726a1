"""The cluster demo (loadtest/cluster_demo.py, ``make cluster-demo``): started as a child as a person
would start it, it is one service across its nodes (an alias created through nginx is known to
another node and takes mail through a third), and SIGTERM leaves no process of it running."""

from __future__ import annotations

import json
import signal
import smtplib

import psutil
import requests

from harness.processes import python_child, wait_for


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_three_nodes_on_a_cluster_are_one_service_and_stop_together(tmp_path):
    ready = tmp_path / "demo.ready"
    demo = python_child("cluster-demo", ["loadtest.cluster_demo", "--workdir",
                                         str(tmp_path / "demo"), "--ready-file", str(ready)],
                        tmp_path, ready_file=ready)
    where = demo.start()
    processes = _descendants(demo.pid)
    try:
        first, second, third = where["nodes"]
        created = requests.post(f"{where['http']}/api/v1/aliases", timeout=10,
                                json={"target": "owner@example.org", "days": 1})
        assert created.status_code == 201, created.text
        alias = created.json()
        shown = requests.get(f"{second['http']}/api/v1/aliases/{alias['id']}", timeout=10,
                             headers={"Authorization": f"Bearer {alias['token']}"})
        assert shown.status_code == 200 and shown.json()["target"] == "owner@example.org"
        with smtplib.SMTP("127.0.0.1", third["smtp"], timeout=10) as client:
            refused = client.sendmail("someone@sender.example", [alias["address"]],
                                      b"From: <someone@sender.example>\r\nSubject: demo\r\n\r\nhi\r\n")
        assert refused == {}
    finally:
        assert demo.stop(signal.SIGTERM) == 0, demo.log_text()[-3000:]
    counts = json.loads(open(where["sink_status_file"], encoding="utf-8").read())
    assert counts["messages"] == 1
    assert len(processes) >= 3 + 6 + 2  # nodes, cluster nodes, nginx (master and worker), sink
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                             for p in processes), 10, "every process of the demo to be gone")
