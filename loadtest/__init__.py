"""Load tests (Locust) and the side-by-side benchmark: run on demand, never part of the service."""
