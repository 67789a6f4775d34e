"""Release notifications: one CloudEvent (structured JSON over HTTP) to each configured webhook (adapter).

This is the Argo Events end of the pipeline: receivers learn that a release was published
or rejected. Delivery is best effort by design: every failure is reported as data
(`NotifyReport`), nothing here raises, and a failed notification never undoes a release.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import stamina
from cloudevents.core.bindings.http import to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from ci.core.config import NotifyConfig
from ci.core.outcome import Delivery, NotifyReport
from ci.core.redact import redact
from ci.core.verdict import Verdict

EVENT_PREFIX = "dev.maci.release"
Outcome = Literal["published", "rejected", "failed"]
ATTEMPTS = 3



def event_type(outcome: Outcome) -> str:
    return f"{EVENT_PREFIX}.{outcome}"


def build_event(
    verdict: Verdict,
    *,
    outcome: Outcome | None = None,
    index_digest: str | None = None,
    tags: Sequence[str] = (),
    deploy_commit: str | None = None,
    promoted_version: str | None = None,
    error: str = "",
) -> CloudEvent:
    """The CloudEvent for a finished release (pure). `outcome` defaults from the verdict.

    `published` = the index was pushed; `rejected` = a gate said no; `failed` = every gate
    passed but a later step (publish, deploy, promote) failed, with `error` saying which.
    """
    if outcome is None:
        outcome = "published" if verdict.passed and index_digest else "rejected"
    placements = {p.platform: p.placement for p in verdict.platforms}
    smoke = {s.platform: s for s in verdict.smoke}
    data: dict[str, Any] = {
        "outcome": outcome,
        "project": verdict.project,
        "image": verdict.image,
        "index_digest": index_digest,
        "reference": f"{verdict.image}@{index_digest}" if index_digest else None,
        "tags": list(tags),
        "platforms": [
            {
                "platform": p,
                "placement": placements.get(p, "unavailable"),
                "digest": next((r.digest for r in verdict.platforms if r.platform == p), None),
                "smoke_p95_ms": smoke[p].p95_ms if p in smoke else None,
            }
            for p in verdict.expected_platforms
        ],
        "model_version": verdict.model.candidate_version if verdict.model else None,
        "promoted_version": promoted_version,
        "deploy_commit": deploy_commit,
        "run_id": verdict.run_id,
        "source": {
            "sha": verdict.source.sha,
            "ref": verdict.source.ref,
            "run_url": verdict.source.run_url,
        },
        "verdict": verdict.summary(),
        "error": redact(error),
    }
    attributes: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "type": event_type(outcome),
        "source": verdict.source.repository_url or f"multiarch-ci/{verdict.project}",
        "subject": verdict.image,
        "datacontenttype": "application/json",
    }
    return CloudEvent(attributes=attributes, data=data)


def display_url(url: str) -> str:
    """A webhook URL safe to print: no user:password, no query string, secrets masked."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return redact(urlunsplit((parts.scheme, netloc, parts.path, "", "")))


class _Retryable(Exception):
    """A 5xx answer: worth another attempt."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def _retry_on(exc: Exception) -> bool:
    return isinstance(exc, (_Retryable, httpx.TransportError))


async def _deliver_one(client: httpx.AsyncClient, url: str, headers: dict[str, str], body: bytes,
                       timeout: float, attempts: int) -> Delivery:
    shown = display_url(url)
    started = anyio.current_time()
    tries = 0
    try:
        async for attempt in stamina.retry_context(
            on=_retry_on, attempts=attempts, timeout=timeout * attempts + 5,
            wait_initial=0.2, wait_max=1.0, wait_jitter=0.1,
        ):
            with attempt:
                tries += 1
                resp = await client.post(url, content=body, headers=headers, timeout=timeout)
                if resp.status_code >= 500:
                    raise _Retryable(resp.status_code)
    except _Retryable as exc:
        return Delivery(webhook=shown, delivered=False, status=exc.status, error=f"HTTP {exc.status}",
                        attempts=tries, seconds=round(anyio.current_time() - started, 3))
    except httpx.HTTPError as exc:
        return Delivery(webhook=shown, delivered=False, error=redact(f"{type(exc).__name__}: {exc}"),
                        attempts=tries, seconds=round(anyio.current_time() - started, 3))
    seconds = round(anyio.current_time() - started, 3)
    if not resp.is_success:
        return Delivery(webhook=shown, delivered=False, status=resp.status_code,
                        error=f"HTTP {resp.status_code}", attempts=tries, seconds=seconds)
    return Delivery(webhook=shown, delivered=True, status=resp.status_code, attempts=tries,
                    seconds=seconds)


async def deliver(event: CloudEvent, webhooks: Sequence[str], *, timeout: float = 5.0,
                  attempts: int = ATTEMPTS) -> NotifyReport:
    """POST the event in structured mode to every webhook at once; report each outcome."""
    message = to_structured(event, JSONFormat())
    results: dict[int, Delivery] = {}

    async def one(i: int, url: str, client: httpx.AsyncClient) -> None:
        try:
            results[i] = await _deliver_one(client, url, dict(message.headers), message.body,
                                            timeout, attempts)
        except Exception as exc:  # a notification must never break the release
            results[i] = Delivery(webhook=display_url(url), delivered=False,
                                  error=redact(f"{type(exc).__name__}: {exc}"))

    async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client, \
            anyio.create_task_group() as tg:
        for i, url in enumerate(webhooks):
            tg.start_soon(one, i, url, client)
    return NotifyReport(event_id=event.get_id(), event_type=event.get_type(),
                        deliveries=[results[i] for i in range(len(webhooks))])


async def notify(verdict: Verdict, config: NotifyConfig, **event: Any) -> NotifyReport:
    """Build the release event (keywords as `build_event`) and deliver it to `config.webhooks`."""
    ev = build_event(verdict, **event)
    if not config.webhooks:
        return NotifyReport(event_id=ev.get_id(), event_type=ev.get_type())
    return await deliver(ev, config.webhooks, timeout=config.timeout_seconds)


def notify_sync(verdict: Verdict, config: NotifyConfig, **event: Any) -> NotifyReport:
    """Synchronous `notify` for callers outside an event loop."""
    return anyio.run(functools.partial(notify, verdict, config, **event))
