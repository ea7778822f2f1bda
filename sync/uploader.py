"""The position uploader: sends the outbox to `POST {server}/api/v1/positions` in batches.

Wire format (gzip-compressed JSON, `Content-Encoding: gzip`, bearer token):

    request  {"positions": [{"device_id", "vehicle_id", "fix_time": "2024-05-01T12:00:00.000Z",
                             "lat", "lon", "speed_kph", "course", "altitude", "accuracy", "attributes"}]}
    response 200 {"accepted": int, "duplicates": int, "rejected": [{"index": int, "reason": str}]}

The outbox is the only state, so an upload survives restarts: fixes stay `pending` until the
server has answered for them. Accepted and duplicate fixes become `uploaded`; rejected ones
`failed` with the server's reason (kept for the user, never retried). HTTP 5xx, 429, network
errors and unreadable answers count an attempt and are retried with jittered exponential
backoff (a Retry-After header sets the wait); so are other unexpected statuses (404 ...).
400, 413 and 422 for a batch halve the batch to find the culprit; for a single fix they
reject it with the status as reason. 401 refreshes the token once; after that (or on 403) the uploader stops and asks
the user to sign in again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gzip
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx

from storage.positions import Fix, OutboxCounts, StoredFix
from sync.client import AuthRejected, TokenSource

if TYPE_CHECKING:
    from storage.store import Store

log = logging.getLogger(__name__)

POSITIONS_PATH = "/api/v1/positions"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_fix_time(fix_time: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds and Z, rounded to the millisecond."""
    ms = round(fix_time * 1000)
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _json_number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def wire_position(fix: Fix) -> dict[str, Any]:
    return {
        "device_id": fix.device_id,
        "vehicle_id": fix.vehicle_id,
        "fix_time": format_fix_time(fix.fix_time),
        "lat": fix.lat,
        "lon": fix.lon,
        "speed_kph": _json_number(fix.speed_kph),
        "course": _json_number(fix.course),
        "altitude": _json_number(fix.altitude),
        "accuracy": _json_number(fix.accuracy),
        "attributes": dict(fix.attributes),
    }


def encode_batch(fixes: Sequence[Fix]) -> bytes:
    """The gzip-compressed JSON request body for a batch."""
    body = json.dumps({"positions": [wire_position(f) for f in fixes]}, separators=(",", ":"),
                      allow_nan=False).encode()
    return gzip.compress(body, compresslevel=6, mtime=0)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


class UploadState(enum.StrEnum):
    IDLE = "idle"  # nothing pending, or waiting for more
    UPLOADING = "uploading"
    RETRYING = "retrying"  # the last attempt failed; waiting before the next
    SIGN_IN_REQUIRED = "sign_in_required"
    STOPPED = "stopped"


@dataclass(frozen=True)
class UploadStatus:
    state: UploadState
    pending: int
    uploaded: int
    failed: int
    detail: str = ""
    last_upload_at: float | None = None
    retry_in: float | None = None

    def describe(self) -> str:
        text = f"{self.state.value}: {self.pending} pending, {self.uploaded} uploaded, {self.failed} failed"
        return f"{text} ({self.detail})" if self.detail else text


class UploadError(Exception):
    """An upload attempt that failed for now; the batch stays pending."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class PositionUploader:
    def __init__(
        self,
        store: Store,
        server_url: str,
        token_source: TokenSource,
        *,
        batch_size: int = 500,
        min_backoff: float = 1.0,
        max_backoff: float = 300.0,
        max_retry_after: float = 3600.0,
        idle_interval: float = 10.0,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.url = server_url.rstrip("/") + POSITIONS_PATH
        self.tokens = token_source
        self.batch_size = max(1, batch_size)
        self._batch_limit = self.batch_size  # shrinks on 413 / a batch with a bad fix
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.max_retry_after = max_retry_after
        self.idle_interval = idle_interval
        self.timeout = timeout
        self._client = client
        self._own_client = client is None
        self._rng = rng or random.Random()
        self.attempts = 0  # consecutive failed attempts
        self._refresh_used = False
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[Callable[[UploadStatus], None]] = []
        counts = self.counts()
        self._status = UploadStatus(UploadState.IDLE, counts.pending, counts.uploaded, counts.failed)

    # -- status -------------------------------------------------------------------------------

    def counts(self) -> OutboxCounts:
        return self.store.positions.counts()

    @property
    def status(self) -> UploadStatus:
        return self._status

    def on_status(self, listener: Callable[[UploadStatus], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _set_status(self, state: UploadState, detail: str = "", *, retry_in: float | None = None,
                    uploaded_now: bool = False) -> None:
        counts = self.counts()
        status = UploadStatus(state, counts.pending, counts.uploaded, counts.failed, detail,
                              time.time() if uploaded_now else self._status.last_upload_at, retry_in)
        if status == self._status:
            return
        self._status = status
        for listener in list(self._listeners):
            try:
                listener(status)
            except Exception:
                log.exception("upload status listener failed")

    # -- one batch ----------------------------------------------------------------------------

    async def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
            self._own_client = True
        return self._client

    async def upload_once(self) -> int:
        """Send one batch. Returns how many fixes the server answered for (uploaded or rejected),
        0 when nothing is pending. Raises UploadError (batch stays pending, attempt counted) or
        AuthRejected (401/403; nothing counted)."""
        batch = self.store.positions.pending_batch(self._batch_limit)
        if not batch:
            return 0
        fids = [s.fid for s in batch]
        try:
            body = encode_batch([s.fix for s in batch])
        except (TypeError, ValueError) as exc:  # attributes JSON cannot carry: reject the culprits
            return self._reject_unencodable(batch, exc)
        client = await self._http()
        try:
            token = await self.tokens.access_token()
            response = await client.post(self.url, content=body, headers={
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "Accept": "application/json",
                "Authorization": f"Bearer {token}",
            })
        except httpx.HTTPError as exc:
            return self._transient(fids, f"network error: {exc.__class__.__name__}: {exc}".rstrip(": "))
        status = response.status_code
        if status in (401, 403):
            raise AuthRejected(status, _reason(response))
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return self._transient(fids, f"HTTP {status}: {_reason(response)}", retry_after)
        if status in (400, 413, 422):
            if len(batch) > 1:
                self._batch_limit = max(1, len(batch) // 2)
                raise UploadError(f"HTTP {status} for a batch of {len(batch)}: {_reason(response)}; "
                                  f"narrowing down to {self._batch_limit}", 0.0)
            self.store.positions.mark_rejected([(fids[0], f"HTTP {status}: {_reason(response)}")])
            return 1
        if status != 200:  # 404, 405, 415 ...: a server (or proxy) that is not ready for us yet
            return self._transient(fids, f"HTTP {status}: {_reason(response)}")
        try:
            rejected = _parse_answer(response.json(), len(batch))
        except (ValueError, TypeError, KeyError) as exc:
            return self._transient(fids, f"unreadable answer from the server: {exc}")
        with self.store.transaction():
            self.store.positions.mark_rejected([(fids[i], reason) for i, reason in rejected.items()])
            self.store.positions.mark_uploaded([fid for i, fid in enumerate(fids) if i not in rejected])
        self.attempts = 0
        self._refresh_used = False
        if self._batch_limit < self.batch_size:
            self._batch_limit = min(self.batch_size, self._batch_limit * 2)
        return len(batch)

    def _transient(self, fids: list[int], detail: str, retry_after: float | None = None) -> int:
        self.store.positions.mark_attempt_failed(fids, detail)
        raise UploadError(detail, retry_after)

    def _reject_unencodable(self, batch: list[StoredFix], exc: Exception) -> int:
        bad = []
        for stored in batch:
            try:
                encode_batch([stored.fix])
            except (TypeError, ValueError) as one:
                bad.append((stored.fid, f"cannot be encoded: {one}"))
        if not bad:  # the batch as a whole failed but no single fix does: should not happen
            raise UploadError(f"cannot encode the batch: {exc}")
        self.store.positions.mark_rejected(bad)
        return len(bad)

    # -- the loop -----------------------------------------------------------------------------

    def backoff_delay(self, retry_after: float | None = None) -> float:
        """The wait before the next attempt, after `self.attempts` failures in a row."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        delay: float = min(self.max_backoff, self.min_backoff * 2.0 ** max(0, self.attempts - 1))
        return delay * self._rng.uniform(0.5, 1.0)

    def wake(self) -> None:
        """New fixes were recorded: upload now instead of at the next idle poll. Thread-safe."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        """Upload until stop() or until the credentials are rejected for good."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        try:
            while not self._stopping:
                self._wake.clear()
                self._set_status(UploadState.UPLOADING)
                try:
                    sent = await self.upload_once()
                except AuthRejected as exc:
                    if exc.code == 401 and not self._refresh_used:
                        self._refresh_used = True
                        with contextlib.suppress(Exception):
                            if await self.tokens.refresh():
                                continue
                    self._set_status(UploadState.SIGN_IN_REQUIRED,
                                     "sign in again: " + (exc.reason or "credentials rejected"))
                    return
                except UploadError as exc:
                    self.attempts += 1
                    delay = self.backoff_delay(exc.retry_after)
                    log.info("position upload failed (%s); retrying in %.1fs", exc.detail, delay)
                    self._set_status(UploadState.RETRYING, exc.detail, retry_in=delay)
                    await self._sleep(delay, wakeable=False)
                    continue
                if sent:
                    self._set_status(UploadState.UPLOADING, uploaded_now=True)
                    continue
                self._set_status(UploadState.IDLE)
                await self._sleep(self.idle_interval, wakeable=True)
        finally:
            if self._status.state != UploadState.SIGN_IN_REQUIRED:
                self._set_status(UploadState.STOPPED)
            self._loop = None
            self._stopping = False  # a stop() asked before run() started counts; after it, run() may start again
            await self.aclose()

    async def _sleep(self, seconds: float, *, wakeable: bool) -> None:
        """Wait `seconds`; stop() always ends the wait, wake() only when `wakeable`."""
        assert self._wake is not None and self._stopped is not None
        event = self._wake if wakeable else self._stopped
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()

    async def stop(self) -> None:
        self._stopping = True
        if self._wake is not None and self._stopped is not None:
            self._wake.set()
            self._stopped.set()

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None


def _reason(response: httpx.Response) -> str:
    text = response.text.strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:200] or response.reason_phrase
    if isinstance(data, dict):
        for key in ("detail", "error", "message", "reason"):
            if isinstance(data.get(key), str):
                return str(data[key])[:200]
    return text[:200]


def _parse_answer(data: Any, size: int) -> dict[int, str]:
    """Rejected batch indices and reasons from a 200 answer; ValueError when it does not add up."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    accepted, duplicates, rejected = data["accepted"], data["duplicates"], data.get("rejected") or []
    if not isinstance(accepted, int) or not isinstance(duplicates, int) or not isinstance(rejected, list):
        raise ValueError("counts of the wrong type")
    reasons: dict[int, str] = {}
    for item in rejected:
        index = item["index"]
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < size or index in reasons:
            raise ValueError(f"bad rejected index {index!r}")
        reasons[index] = str(item.get("reason") or "rejected by the server")
    if accepted + duplicates + len(reasons) != size:
        # The server did not answer for every fix: resend (it deduplicates) rather than guess.
        raise ValueError(f"answer covers {accepted + duplicates + len(reasons)} of {size} fixes")
    return reasons


__all__ = [
    "POSITIONS_PATH",
    "AuthRejected",
    "PositionUploader",
    "UploadError",
    "UploadState",
    "UploadStatus",
    "encode_batch",
    "format_fix_time",
    "parse_retry_after",
    "wire_position",
]
