"""Alerts as Slack-compatible webhook messages: the message, its JSON and a patient delivery.

Pure logic, no Dagster: :class:`Alert` describes what happened, :func:`slack_payload` turns it
into incoming-webhook JSON (a plain ``text`` fallback plus Block Kit ``blocks``, kept within
Slack's limits), and :func:`post_alert` delivers it with retries and never raises. Webhook URLs
carry a secret in their path (``https://hooks.slack.com/services/T…/B…/secret``), so logs and
errors only ever name the scheme and host (:func:`redact_url`).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

Severity = Literal["info", "warning", "error"]

# Slack Block Kit limits (https://api.slack.com/reference/block-kit/blocks)
HEADER_MAX_CHARS = 150
SECTION_TEXT_MAX_CHARS = 3000
FIELD_TEXT_MAX_CHARS = 2000
FIELDS_PER_SECTION = 10
MAX_BLOCKS = 50
FALLBACK_TEXT_MAX_CHARS = 4000
MAX_FIELDS = 30  # three field sections: enough for any alert, far below MAX_BLOCKS

SEVERITY_EMOJI: dict[str, str] = {
    "info": ":information_source:",
    "warning": ":warning:",
    "error": ":rotating_light:",
}

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """Something an operator should know: a title, a text, a severity, an optional link (to the
    Dagster run, the drift report...) and short key/value fields (job, partition, share...)."""

    title: str
    text: str
    severity: Severity
    link: str | None = None
    link_text: str = "Open"
    fields: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One plain line for logs: severity, title, text, link."""
        line = f"[{self.severity.upper()}] {self.title}: {self.text}"
        if self.fields:
            line += " (" + ", ".join(f"{k}: {v}" for k, v in self.fields.items()) + ")"
        if self.link:
            line += f" {self.link}"
        return line


@dataclass(frozen=True)
class AlertOutcome:
    """What became of an alert: posted (``delivered``) or not, after how many HTTP attempts, the
    last HTTP status, the last error (secret-free), and whether it was only logged because no
    webhook is configured."""

    delivered: bool
    attempts: int
    status: int | None = None
    error: str | None = None
    logged_only: bool = False

    def describe(self) -> str:
        """A short human-readable account of the outcome."""
        if self.logged_only:
            return "logged only (no webhook configured)"
        if self.delivered:
            return f"delivered (HTTP {self.status}, {self.attempts} attempt(s))"
        return f"not delivered after {self.attempts} attempt(s): {self.error}"


# --- the payload ------------------------------------------------------------------------


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str, text: str) -> str:
    """A mrkdwn link ``<url|text>`` that characters in the URL or the text cannot break."""
    safe_url = url.replace(" ", "%20").replace("<", "%3C").replace(">", "%3E")
    safe_url = safe_url.replace("|", "%7C")
    return f"<{safe_url}|{_escape(text).replace('|', '¦')}>"


def fallback_text(alert: Alert) -> str:
    """The top-level ``text``: shown in notifications and by Slack-compatible receivers that
    ignore blocks. Carries the severity, title, text and link."""
    head = f"{SEVERITY_EMOJI[alert.severity]} [{alert.severity.upper()}] {_escape(alert.title)}"
    link = f"\n{_link(alert.link, alert.link_text)}" if alert.link else ""
    body = truncate(_escape(alert.text), FALLBACK_TEXT_MAX_CHARS - len(head) - len(link) - 2)
    return f"{head}\n{body}{link}"


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack incoming-webhook JSON for ``alert``: a ``text`` fallback and Block Kit ``blocks``
    (a header, the text, sections of at most ten mrkdwn fields, the link), every text truncated
    to Slack's limits."""
    header = truncate(f"{SEVERITY_EMOJI[alert.severity]} {alert.title}", HEADER_MAX_CHARS)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": truncate(_escape(alert.text) or "(no details)", SECTION_TEXT_MAX_CHARS),
            },
        },
    ]
    items = list(alert.fields.items())
    shown = items[:MAX_FIELDS]
    if len(items) > len(shown):
        shown[-1] = ("…", f"{len(items) - MAX_FIELDS + 1} more fields not shown")
    for start in range(0, len(shown), FIELDS_PER_SECTION):
        chunk = shown[start : start + FIELDS_PER_SECTION]
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": truncate(
                            f"*{_escape(str(key))}*\n{_escape(str(value))}", FIELD_TEXT_MAX_CHARS
                        ),
                    }
                    for key, value in chunk
                ],
            }
        )
    if alert.link:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": truncate(f"*{_link(alert.link, alert.link_text)}*", 3000),
                },
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"mlops_assets · severity *{alert.severity}*"}],
        }
    )
    return {"text": fallback_text(alert), "blocks": blocks[:MAX_BLOCKS]}


# --- delivery ---------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """The URL's scheme and host only: webhook URLs keep their secret in the path and query
    (and sometimes user info), none of which may reach a log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<unparsable webhook URL>"
    if not parts.scheme or not host:
        return "<unparsable webhook URL>"
    hidden = "/…" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme}://{host}{hidden}"


def _scrub(message: str, url: str) -> str:
    """``message`` without the URL's secret parts, should an exception have quoted them."""
    message = message.replace(url, redact_url(url))
    try:
        parts = urlsplit(url)
        secrets = (parts.path, parts.query, parts.password or "", parts.username or "")
    except ValueError:
        return message
    for secret in secrets:
        if len(secret) > 1:
            message = message.replace(secret, "/…")
    return message


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answered, not followed: a webhook that redirects is misconfigured, and
    urllib would turn the POST into a GET without the body."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _describe_exception(exc: BaseException) -> str:
    """``Type: message`` of a transport error (a ``URLError``'s underlying reason)."""
    reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return f"{type(exc).__name__}: {reason}"


def post_alert(
    url: str,
    alert: Alert,
    timeout_seconds: float = 5.0,
    retries: int = 3,
    backoff_seconds: float = 0.5,
    log: logging.Logger | None = None,
    *,
    max_retry_after_seconds: float = 10.0,
    deadline_seconds: float | None = None,
) -> AlertOutcome:
    """POST ``alert`` as Slack-compatible JSON to ``url``; never raises.

    Connection errors, timeouts, 429 and 5xx are retried up to ``retries`` times (so at most
    ``retries + 1`` attempts), waiting ``backoff_seconds * 2**n`` between attempts, or the
    ``Retry-After`` of a 429 (capped at ``max_retry_after_seconds``). Other answers (4xx,
    3xx) are final. With ``deadline_seconds`` the whole delivery, waits included, ends within
    that time (later attempts get shorter timeouts, or are given up). Every failed attempt is
    logged as a warning and a final failure as an error that repeats the whole alert, so it
    is not lost; the URL is logged without its path.
    """
    log = log or _log
    where = redact_url(url)
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme not in ("http", "https"):
        error = f"webhook URL {where} is not an http(s) URL"
        log.error(f"Alert not delivered: {error}. The alert: {alert.summary()}")
        return AlertOutcome(delivered=False, attempts=0, error=error)

    body = json.dumps(slack_payload(alert)).encode("utf-8")
    total = max(retries, 0) + 1
    started = time.monotonic()
    status: int | None = None
    error: str | None = None
    attempts = 0
    timeout = timeout_seconds
    while True:
        attempts += 1
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "mlops-assets-alerts",
            },
        )
        retryable = True
        wait: float | None = None
        try:
            with _opener.open(request, timeout=timeout) as response:
                status = response.status
                response.read()
            log.debug(f"Alert {alert.title!r} delivered to {where} (HTTP {status})")
            return AlertOutcome(delivered=True, attempts=attempts, status=status)
        except urllib.error.HTTPError as exc:
            status = exc.code
            detail = _scrub(_read_body(exc), url)
            error = f"HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
            if exc.code == 429:
                wait = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
                if wait is not None:
                    wait = min(wait, max_retry_after_seconds)
            else:
                retryable = exc.code >= 500
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, DNS
            status = None
            error = _scrub(_describe_exception(exc), url)
        except Exception as exc:  # never let an alert break its caller
            status = None
            error = _scrub(f"{type(exc).__name__}: {exc}", url)
            retryable = False

        failed = f"Alert {alert.title!r}: attempt {attempts}/{total} to {where} failed: {error}"
        if not retryable:
            log.error(
                f"Alert {alert.title!r} not delivered to {where}: {error} (not retried). "
                f"The alert: {alert.summary()}"
            )
            return AlertOutcome(delivered=False, attempts=attempts, status=status, error=error)
        if attempts >= total:
            log.warning(failed)
            why = f"giving up after {attempts} attempt(s)"
            break
        delay = wait if wait is not None else backoff_seconds * 2 ** (attempts - 1)
        if deadline_seconds is not None:
            remaining = deadline_seconds - (time.monotonic() - started) - delay
            if remaining < min(timeout_seconds, 0.5):
                log.warning(failed)
                why = (
                    f"giving up after {attempts} attempt(s): no time left for another within "
                    f"the {deadline_seconds:g}s deadline"
                )
                break
            timeout = min(timeout_seconds, remaining)
        log.warning(f"{failed}; retrying in {delay:.2f}s")
        time.sleep(delay)
    log.error(
        f"Alert {alert.title!r} not delivered to {where}: {why}; last error: {error}. "
        f"The alert: {alert.summary()}"
    )
    return AlertOutcome(delivered=False, attempts=attempts, status=status, error=error)


def _read_body(response: urllib.error.HTTPError, limit: int = 200) -> str:
    """The first characters of an error response's body (Slack explains errors there)."""
    try:
        return response.read(limit).decode("utf-8", "replace").strip()
    except Exception:
        return ""
