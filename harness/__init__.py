"""The test and load-test harness: child processes and SMTP peers, shared by ``tests/`` and
``loadtest/`` (neither is part of the installed service).

- ``processes``: ``wait_for`` (every wait has a deadline), ``Child`` (one process, its log, its
  ready file, stopped on every path) and ``ServiceProcess`` (``tempalias serve`` as an operator
  runs it, on ports the kernel picks).
- ``smtp_peer``: ``SmtpPeer``, the one SMTP server the tests and the load test talk to (a sink
  that keeps or counts messages, or a smarthost scripted to refuse, hold, hang up or record how
  commands arrive), and ``RawClient``, SMTP at the byte level for what smtplib will not send.
- ``redis_topology``: ``SentinelSet`` and ``ClusterSet``, real Redis Sentinel and Redis Cluster
  deployments on loopback ports, formed before ``start()`` returns, a primary killed with SIGKILL
  and its promotion waited for.
"""
