import json
import urllib.request


def test_service_answers(service):
    with urllib.request.urlopen(service.http_url + "/healthz", timeout=5) as answer:
        assert json.load(answer) == {"status": "ok"}
