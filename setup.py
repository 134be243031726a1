from setuptools import find_packages, setup

# The frontend and the browser extension stay at the top of the repository, where `make run`
# serves them from the source tree; in a wheel or sdist each travels as a data-only package,
# tempalias.static and tempalias.extension (tempalias/bundled.py looks there first).
FRONTEND = {"tempalias.static": "static", "tempalias.extension": "extension"}

setup(
    name="tempalias",
    version="0.1.0",
    description="Temporary email aliases that forward until a count or a date runs out",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["tempalias", "tempalias.*"]) + list(FRONTEND),
    package_dir=FRONTEND,
    package_data={name: ["*"] for name in FRONTEND},
    install_requires=[
        "gevent>=24.2,<27",
        "bottle>=0.13,<0.14",
        "redis[hiredis]>=5.0,<9",
        "dnspython>=2.6,<3",
        "idna>=3.6,<4",
        # mail authentication: DKIM and ARC (signing, sealing, checking), SPF, DMARC's pieces
        "dkimpy>=1.1.8,<2",
        "pyspf>=2.0.14,<3",
        "authres>=1.2,<2",
        "publicsuffixlist>=1.0,<2",
        "cryptography>=42",
        "pynacl>=1.5,<2",
        "prometheus_client>=0.20,<1",  # /metrics, in its multiprocess mode for --workers
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "schemathesis>=4,<5",
            "psutil>=5.9,<8",
            "playwright>=1.40,<2",
            "dnslib>=0.9.24,<0.10",
            "requests>=2.31,<3",
            "pyyaml>=6,<7",  # the alert rules and their promtool tests, read and changed
            "locust>=2.40,<3",
            # the benchmark's charts (loadtest/bench/charts.py, make bench) and their test; never
            # imported by the service
            "matplotlib>=3.8,<4",
            # tests/test_packaging.py builds the wheel offline, with bdist_wheel built in.
            "setuptools>=70.1",
        ],
    },
    entry_points={"console_scripts": ["tempalias=tempalias.cli:main"]},
)
