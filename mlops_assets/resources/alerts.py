"""Where alerts go: a Slack-compatible webhook, or the log when none is configured."""

import logging

import dagster as dg
from pydantic import Field

from mlops_assets.monitor.alerts import Alert, AlertOutcome, post_alert, redact_url

_log = logging.getLogger(__name__)


class AlertSink(dg.ConfigurableResource):
    """Posts alerts (run failures, drift, data quality) to a Slack-compatible incoming webhook.

    Without ``webhook_url`` alerts are only logged (warning level for warnings and errors). A
    webhook that is down or refuses the message never fails the caller: the post is retried
    and then the alert is logged in full. Give the URL through ``dg.EnvVar`` so the Dagster UI
    shows the variable's name rather than the secret.
    """

    webhook_url: str | None = Field(
        default=None,
        description="Slack-compatible incoming-webhook URL; none: alerts are only logged.",
    )
    timeout_seconds: float = Field(
        default=5.0, gt=0, description="Connect and read timeout of one POST."
    )
    retries: int = Field(
        default=3, ge=0, description="Retries after a failed POST (connection error, 429, 5xx)."
    )
    backoff_seconds: float = Field(
        default=0.5, ge=0, description="Wait before the first retry; doubles at every retry."
    )
    max_seconds_per_alert: float = Field(
        default=10.0,
        gt=0,
        description="Deadline of one alert's delivery, retries and waits included: a sensor "
        "tick sends up to 5 alerts and must end within Dagster's 60 s sensor timeout.",
    )

    def send(self, alert: Alert, log: logging.Logger | None = None) -> AlertOutcome:
        """Deliver ``alert`` (or log it when no webhook is configured); never raises."""
        log = log or _log
        level = logging.INFO if alert.severity == "info" else logging.WARNING
        if not self.webhook_url:
            log.log(level, f"Alert (no webhook configured, logged only): {alert.summary()}")
            return AlertOutcome(delivered=False, attempts=0, logged_only=True)
        outcome = post_alert(
            self.webhook_url,
            alert,
            timeout_seconds=self.timeout_seconds,
            retries=self.retries,
            backoff_seconds=self.backoff_seconds,
            log=log,
            deadline_seconds=self.max_seconds_per_alert,
        )
        if outcome.delivered:
            log.log(
                level,
                f"Alert sent to {redact_url(self.webhook_url)} ({outcome.describe()}): "
                f"{alert.summary()}",
            )
        return outcome
