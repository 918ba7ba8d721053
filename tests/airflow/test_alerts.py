import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest

from cfrec_airflow import alerts


@pytest.fixture
def webhook():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def context(error):
    ti = SimpleNamespace(
        dag_id="cfrec_nightly",
        task_id="score",
        run_id="scheduled__2026-11-20",
        try_number=3,
        max_tries=2,
        log_url="http://airflow/log",
    )
    return {"task_instance": ti, "exception": error}


def test_failure_is_reported_to_the_webhook(webhook, monkeypatch):
    url, received = webhook
    monkeypatch.setenv("CFREC_ALERT_WEBHOOK", url)
    monkeypatch.delenv("CFREC_ALERT_EMAIL", raising=False)
    message = alerts.on_failure(context(RuntimeError("executor lost\nstack trace follows")))
    assert message["webhook_status"] == 200
    assert len(received) == 1
    body = received[0]
    assert (body["dag_id"], body["task_id"], body["try_number"]) == ("cfrec_nightly", "score", 3)
    assert body["reason"] == "RuntimeError: executor lost"
    assert body["text"].startswith("cfrec: cfrec_nightly.score failed (scheduled__2026-11-20)")


def test_unreachable_webhook_does_not_raise(monkeypatch, caplog):
    monkeypatch.setenv("CFREC_ALERT_WEBHOOK", "http://127.0.0.1:9/nothing-listens-here")
    message = alerts.on_failure(context(ValueError("bad")))
    assert "webhook_status" not in message
    assert "could not be reached" in caplog.text


def test_without_configuration_it_only_logs(monkeypatch, caplog):
    monkeypatch.delenv("CFREC_ALERT_WEBHOOK", raising=False)
    monkeypatch.delenv("CFREC_ALERT_EMAIL", raising=False)
    message = alerts.on_failure({"ti": SimpleNamespace(dag_id="d", task_id="t", run_id="r")})
    assert message["reason"].startswith("unknown")
    assert "task failed" in caplog.text and '"task_id": "t"' in caplog.text
