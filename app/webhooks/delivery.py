"""Background delivery: lease due deliveries, POST them to their targets, record the outcome.

``Dispatcher.run`` lives as long as the process (started by the lifespan). It
polls the store every ``interval`` seconds for due deliveries, claiming only as
many as it has free attempt slots and their targets can take (``_room``), so a
claimed delivery is attempted at once and its lease never runs out while it
waits; it polls sooner once half the slots, or half a target's in-flight cap,
are free again. Right after intake is the fast
path: when it has free slots (``reserve``) intake stores the new deliveries
already leased to this process and ``deliver_claimed`` attempts them with no
claim of their own; otherwise ``deliver_soon`` claims them one by one (a
replay does too) or leaves them to the next poll. A target that is ``busy``
(at its cap or rate, its breaker open) gets neither: its new deliveries wait,
pending, for the poller, which claims nothing for it until its gate opens. A delivery whose holder
crashed is claimed again once its lease expires, by whichever process polls first.

Every lease this process takes comes with a slot already held: ``reserve`` and
the poller take their slots before the store leases anything, and
``deliver_soon`` claims only once it has one. A leased delivery that waited for
a slot could outlive its lease and be claimed, and sent, a second time.

Each attempt sends the stored body and headers plus ``X-Gatehouse-Event-Id``
(the same for every attempt and target, so receivers can dedupe),
``X-Gatehouse-Provider-Event-Id`` when the provider sent one,
``X-Gatehouse-Delivery-Id`` and ``X-Gatehouse-Attempt``; with a target's
``signing_secret``, a Standard Webhooks signature (``app.webhooks.signing``). The
provider's own signature headers are passed on only to a target that sets
``forward_provider_signature``. What follows an attempt is
``app.webhooks.schedule.classify``'s call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import anyio
import httpx

from app.config.webhooks import DeliveryTarget, WebhookEndpoint
from app.webhooks.batching import StoreWriter
from app.webhooks.database import StoreError, utc_now
from app.webhooks.outgoing import TargetRequests
from app.webhooks.pacing import TargetGate
from app.webhooks.records import AttemptResult, Claim, ClaimedDelivery, Finish, Lease
from app.webhooks.schedule import Dead, Delivered, Retry, classify
from app.webhooks.store import DeliveryStore

log = logging.getLogger("gatehouse.webhooks")

_MAX_ERROR = 500


def lease_owner() -> str:
    """A name unique to this process run: host, pid and a random suffix (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Dispatcher:
    """Attempts deliveries; see the module docstring."""

    def __init__(
        self,
        store: DeliveryStore,
        writer: StoreWriter,
        endpoints: Sequence[WebhookEndpoint],
        http: httpx.AsyncClient,
        *,
        interval: float,
        batch: int,
        concurrency: int,
        lease_seconds: float,
        owner: str | None = None,
        on_attempt: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self._writer = writer  # claims after intake and every outcome are group-committed with intakes
        # Told (endpoint, "delivered" | "failed" | "dead") after each attempt: the metrics' hook.
        self._on_attempt = on_attempt
        self.owner = owner or lease_owner()
        self._http = http
        self._endpoints: Mapping[str, Mapping[str, DeliveryTarget]] = {
            endpoint.name: {target.name: target for target in endpoint.deliver_to} for endpoint in endpoints
        }
        self._policies = {endpoint.name: endpoint.retry for endpoint in endpoints}
        self._requests = {
            (endpoint.name, target.name): TargetRequests(endpoint, target, http)
            for endpoint in endpoints
            for target in endpoint.deliver_to
        }
        # Per target: in-flight cap (default half the slots), rate limit and breaker.
        self._gates = {
            (endpoint.name, target.name): TargetGate.for_target(target, default_in_flight=max(1, concurrency // 2))
            for endpoint in endpoints
            for target in endpoint.deliver_to
        }
        self._interval = interval
        self._batch = batch
        self._lease = lease_seconds
        self._slots = anyio.CapacityLimiter(concurrency)
        self._soon_limit = concurrency * 4  # immediate attempts queued beyond this wait for the poller
        self._soon_queued = 0  # deliver_soon's tasks, waiting for a slot or holding one
        self._reserved: list[object] = []  # slots held for deliveries leased at intake, not yet attempted
        self._running = False
        self._attempts: set[asyncio.Task[None]] = set()  # every attempt under way (see _spawn)
        self._crashed: BaseException | None = None  # what one of them raised unexpectedly
        self._wake = anyio.Event()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll and attempt until cancelled (lifespan shutdown)."""
        self._running = True
        task_status.started()
        try:
            await self._poll_forever()
        finally:
            self._running = False
            with anyio.CancelScope(shield=True):
                await self._stop_attempts()

    def reserve(self, count: int) -> Lease | None:
        """A lease for ``count`` new deliveries if they can be attempted at once (free slots), else None.

        With it, intake stores them leased (``NewEvent.lease``) and hands them to ``deliver_claimed``
        after the answer: no claim of their own. Each reserved delivery is given back with
        ``deliver_claimed`` or ``release``.
        """
        # The slots are taken now, not when the attempts start: a task already scheduled (a
        # deliver_soon claim) or a poller between its count and its claim would take them first.
        if not self._running or count > self._slots.available_tokens:
            return None
        slots = self._take_slots(count)
        if len(slots) < count:
            self._give_back(slots)
            return None
        self._reserved += slots
        return Lease(self.owner, self._lease)

    def release(self, count: int) -> None:
        """Give back reserved deliveries that were not stored (a duplicate, a store failure)."""
        self._give_back([self._reserved.pop() for _ in range(count)])

    def deliver_claimed(self, claimed: Sequence[ClaimedDelivery], reserved: int) -> None:
        """Attempt deliveries leased at intake now, in the background; ``reserved`` is what ``reserve`` took."""
        self.release(reserved - len(claimed))
        if not self._running:  # shutting down: the leases expire and a poller has them
            self.release(len(claimed))
            return
        for delivery in claimed:
            self._spawn(self._attempt_reserved(delivery, self._reserved.pop()))

    def deliver_soon(self, delivery_ids: Iterable[int]) -> None:
        """Attempt these deliveries now, in the background (called after the intake answered)."""
        if not self._running:
            return  # not running (shutting down): the next process's poller has them
        for delivery_id in delivery_ids:
            if self._soon_queued >= self._soon_limit:
                self._wake.set()
                return
            self._soon_queued += 1
            self._spawn(self._claim_and_attempt(delivery_id))

    def busy(self, endpoint: str, target: str) -> bool:
        """Whether no attempt to this target could begin now (at its cap or rate, or its breaker open):
        intake then leases and claims none of its deliveries, and leaves them to the poller."""
        gate = self._gates.get((endpoint, target))
        return gate is not None and gate.saturated(time.monotonic())

    def wake(self) -> None:
        """Poll now instead of at the next interval (after a replay)."""
        self._wake.set()

    def _take_slots(self, count: int) -> list[object]:
        """Up to ``count`` free slots, each held by a token of its own, without waiting."""
        slots: list[object] = []
        for _ in range(count):
            slot = object()
            try:
                self._slots.acquire_on_behalf_of_nowait(slot)
            except anyio.WouldBlock:
                break
            slots.append(slot)
        return slots

    def _give_back(self, slots: Iterable[object]) -> None:
        for slot in slots:
            self._slots.release_on_behalf_of(slot)

    def _spawn(self, attempt: Coroutine[Any, Any, None]) -> None:
        """Run an attempt (the poller's, or one right after intake) as a plain asyncio task rather than in
        a task group: anyio's ``start_soon`` makes a cancel scope and an event per task and asks sniffio for
        the running library for each (~5% of an attempt's CPU). ``run`` cancels them at shutdown and waits
        for their hand-backs, as a task group would; one that raises stops the dispatcher."""
        task = asyncio.get_running_loop().create_task(attempt)
        self._attempts.add(task)
        task.add_done_callback(self._attempt_done)

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        self._attempts.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None and self._crashed is None:
            self._crashed = exc
            self._wake.set()

    async def _stop_attempts(self) -> None:
        attempts = list(self._attempts)
        for task in attempts:
            task.cancel()  # once: each hands its delivery back, shielded
        if attempts:
            await asyncio.wait(attempts)

    async def _poll_forever(self) -> None:
        while True:
            if self._crashed is not None:
                raise self._crashed
            claimed = 0
            busy, room = self._room(time.monotonic())
            wanted = min(int(self._slots.available_tokens) - self._soon_queued, self._batch, room)
            slots = self._take_slots(wanted) if wanted > 0 else []  # before the leases
            if slots:
                due: list[ClaimedDelivery] = []
                try:
                    due = await self.store.claim_due(self.owner, self._lease, len(slots), exclude=busy)
                except StoreError as exc:
                    log.warning("webhook dispatcher: cannot claim deliveries: %s", exc)
                finally:
                    self._give_back(slots[len(due) :])
                claimed = len(due)
                for delivery, slot in zip(due, slots, strict=False):
                    self._spawn(self._attempt_and_release(delivery, slot))
            if claimed and claimed >= len(slots):
                await anyio.sleep(0)  # more may be due: claim again as slots free up
                continue
            with anyio.move_on_after(self._interval):
                await self._wake.wait()
            self._wake = anyio.Event()

    def _room(self, now: float) -> tuple[list[tuple[str, str]], int]:
        """The targets that can take no attempt now, and how many attempts the others can take.

        The poller claims no more than that: a delivery claimed beyond its target's room is refused
        by the gate and written back, a claim and a write for nothing (with a backlog for one target
        capped at half the slots, that was every other claimed delivery). Deliveries of a target no
        longer configured (no gate; each is marked dead) are claimed within the others' room.
        """
        busy: list[tuple[str, str]] = []
        room = 0
        for key, gate in self._gates.items():
            if (free := gate.room(now)) > 0:
                room += free
            else:
                busy.append(key)
        return busy, room if self._gates else self._batch

    async def _claim_and_attempt(self, delivery_id: int) -> None:
        try:
            async with self._slots:
                try:
                    claimed = await self._writer.claim(Claim(delivery_id, self.owner, self._lease))
                except StoreError as exc:
                    log.warning("webhook dispatcher: cannot claim delivery %d: %s", delivery_id, exc)
                    return
                if claimed is not None:
                    await self._attempt_gated(claimed)
        finally:
            self._soon_queued -= 1

    async def _attempt_reserved(self, claimed: ClaimedDelivery, slot: object) -> None:
        try:
            await self._attempt_gated(claimed)
        finally:
            self._slots.release_on_behalf_of(slot)

    async def _attempt_gated(self, claimed: ClaimedDelivery) -> None:
        """Attempt if the target's gate lets it in now; else hand the delivery back uncounted."""
        delivery = claimed.delivery
        gate = self._gates.get((delivery.endpoint, delivery.target))
        if gate is None:  # no longer configured: attempt() marks it dead
            await self.attempt(claimed)
            return
        now = time.monotonic()
        if not gate.try_enter(now):
            # More than the target may take now (or its breaker is open): pending again, this claim uncounted.
            due = utc_now() + timedelta(seconds=gate.wait_for_token(now))
            values = {"status": "pending", "next_attempt_at": due, "attempts": delivery.attempts - 1}
            await self._finish(Finish(delivery.id, self.owner, None, values))
            return
        answered_well: bool | None = None
        try:
            answered_well = await self.attempt(claimed)
        finally:
            if gate.leave(time.monotonic(), ok=answered_well):
                self._wake.set()  # its waiting deliveries can be claimed again

    async def _attempt_and_release(self, claimed: ClaimedDelivery, slot: object) -> None:
        try:
            await self._attempt_gated(claimed)
        finally:
            self._slots.release_on_behalf_of(slot)
            # A backlog drains at the pace of the attempts, not of the poll interval: once half the
            # slots are free the poller claims again (once, as they become free: woken at every
            # attempt's end after that, it would claim one delivery at a time). A target's gate wakes
            # it the same way (``TargetGate.leave``).
            if self._slots.available_tokens == (self._slots.total_tokens + 1) // 2:
                self._wake.set()

    async def attempt(self, claimed: ClaimedDelivery) -> bool | None:
        """One attempt of a delivery this process has leased, and its outcome recorded.

        Returns whether the target answered well, as its breaker counts it: False for no answer,
        a 5xx or a 429 (None when no attempt was made).
        """
        delivery = claimed.delivery
        target = self._endpoints.get(delivery.endpoint, {}).get(delivery.target)
        if target is None:
            reason = f"target {delivery.endpoint}/{delivery.target} is no longer configured"
            await self._finish(self.store.dead(delivery.id, self.owner, reason=reason))
            return None
        started_at = utc_now()
        started = time.monotonic()
        status: int | None = None
        retry_after: str | None = None
        error: str | None = None
        requests = self._requests[(delivery.endpoint, delivery.target)]
        try:
            # The whole attempt, however slowly bytes trickle. asyncio's own timeout, not anyio.fail_after:
            # the same TimeoutError at the deadline, and a shutdown's cancellation still passes through
            # (it converts only its own), at a fraction of the cost (fail_after is two generator context
            # managers and a cancel scope, ~5% of an attempt). aiohttp times its reads the same way.
            async with asyncio.timeout(target.timeout):
                request = requests.request(claimed)
                auth = requests.auth
                response = await self._http.send(
                    request, auth=httpx.USE_CLIENT_DEFAULT if auth is None else auth, stream=True
                )
                # Only the status counts: the body is read to keep the connection, never decoded (a
                # target's garbled gzip is no reason to send again what it accepted).
                try:
                    async for _ in response.aiter_raw():
                        pass
                finally:
                    await response.aclose()
            status = response.status_code
            retry_after = response.headers.get("retry-after")
        except TimeoutError:
            error = f"timed out after {target.timeout}s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR] or type(exc).__name__
        except anyio.get_cancelled_exc_class():
            # Shutting down mid-attempt: hand the delivery back now rather than when the lease runs out.
            with anyio.CancelScope(shield=True):
                result = AttemptResult(started_at, _ms_since(started), None, "interrupted by shutdown")
                reason = "interrupted by shutdown"
                await self._finish(self.store.retry(delivery.id, self.owner, delay=0, reason=reason, attempt=result))
            raise
        result = AttemptResult(started_at, _ms_since(started), status, error)
        outcome = classify(
            self._policies[delivery.endpoint],
            delivery.attempts,
            status=status,
            retry_after=retry_after,
            error=error,
            now=time.time(),
        )
        match outcome:
            case Delivered():
                done = self.store.delivered(delivery.id, self.owner, result)
                counted = "delivered"
            case Retry(delay=delay, reason=reason):
                done = self.store.retry(delivery.id, self.owner, delay=delay, reason=reason, attempt=result)
                counted = "failed"
            case Dead(reason=reason):
                log.warning("webhook delivery %d to %s is dead: %s", delivery.id, delivery.target, reason)
                done = self.store.dead(delivery.id, self.owner, reason=reason, attempt=result)
                counted = "dead"
        if self._on_attempt is not None:
            self._on_attempt(delivery.endpoint, counted)
        await self._finish(done)
        return status is not None and status < 500 and status != 429

    async def _finish(self, outcome: Finish) -> None:
        # The lease makes a failed bookkeeping call safe: the delivery is attempted again once it expires.
        delivery_id = outcome.delivery_id
        try:
            kept = await self._writer.finish(outcome)
        except StoreError as exc:
            log.error("webhook delivery %d: could not record the outcome: %s", delivery_id, exc)
            return
        if not kept:
            log.warning("webhook delivery %d: the lease expired during the attempt; outcome not recorded", delivery_id)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
