"""What the DAGs do when a task fails: log it, and post to a webhook or email when configured.

Configuration comes from the environment (or Airflow Variables of the same lower-case name):
CFREC_ALERT_WEBHOOK (an URL that accepts a JSON POST, e.g. a Slack/Teams incoming webhook) and
CFREC_ALERT_EMAIL (comma-separated addresses, sent through Airflow's SMTP connection).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request

log = logging.getLogger(__name__)


def setting(name: str) -> str:
    value = os.environ.get(name, "")
    if value:
        return value
    try:
        from airflow.sdk import Variable

        return Variable.get(name.lower(), default="") or ""
    except Exception:  # no Airflow context (CLI, tests): environment only
        return ""


def failure_message(context: dict) -> dict:
    ti = context.get("task_instance") or context.get("ti")
    error = context.get("exception")
    reason = f"{type(error).__name__}: {error}" if error else "unknown (no exception in context)"
    return {
        "dag_id": getattr(ti, "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": getattr(ti, "run_id", None) or getattr(context.get("dag_run"), "run_id", None),
        "try_number": getattr(ti, "try_number", None),
        "max_tries": getattr(ti, "max_tries", None),
        "reason": reason.splitlines()[0][:1000] if reason else reason,
        "log_url": getattr(ti, "log_url", None),
    }


def post_webhook(url: str, message: dict, timeout: float = 10) -> int:
    text = f"cfrec: {message['dag_id']}.{message['task_id']} failed ({message['run_id']}): {message['reason']}"
    body = json.dumps({"text": text, **message}, default=str).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return reply.status


def on_failure(context: dict) -> dict:
    """Airflow on_failure_callback: never raises, so a broken alert cannot mask the task's own error."""
    message = failure_message(context)
    log.error("task failed: %s", json.dumps(message, default=str))
    webhook = setting("CFREC_ALERT_WEBHOOK")
    if webhook:
        try:
            message["webhook_status"] = post_webhook(webhook, message)
        except Exception as exc:
            log.error("failure webhook %s could not be reached: %s", webhook, exc)
    recipients = [a.strip() for a in setting("CFREC_ALERT_EMAIL").split(",") if a.strip()]
    if recipients:
        try:
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier

            SmtpNotifier(
                to=recipients,
                subject=f"cfrec: {message['dag_id']}.{message['task_id']} failed",
                html_content="<br>".join(f"<b>{k}</b>: {v}" for k, v in message.items()),
            )(context)
            message["emailed"] = recipients
        except Exception as exc:
            log.error("failure email to %s could not be sent: %s", recipients, exc)
    return message
