"""The side-by-side benchmark (``make bench``, ``python -m loadtest.bench``): tempalias against its
own baselines, in one run.

Load comes from tools that are not ours (``tools.py``: wrk, Postfix's smtp-source and smtp-sink,
Postfix itself as the peer forwarder). Every case (``cases.py``) runs ``--runs`` times, the cases
of one run interleaved so that a noisy neighbour on this shared machine hurts them all alike; the
report (``report.py``) shows medians and ranges and the ratios between cases, the targets
(``targets.py``, as data) are read off its key figures, and the JSON in loadtest/results/ keeps
every sample. Every abuse limit of tempalias is off (loadtest/stack.py LIMITS_OFF). Every process
started here is stopped on every path, Ctrl-C and SIGTERM included.
"""
