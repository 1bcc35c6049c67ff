"""The delivery test stack: poller, subscriptions and delivery on one database and one clock,
and the published event schema the received bodies are validated against."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
from sqlalchemy import select

from worker.delivery import DeliveryPolicy, DeliveryService
from worker.policy import PollPolicy
from worker.providers.base import HttpOptions, ProviderContext
from worker.providers.billit import BillitSettings
from worker.providers.registry import REGISTRY, ProviderSet
from worker.service import PollerService
from worker.store.db import make_sessionmaker
from worker.store.models import Delivery
from worker.subscriptions import Subscriptions
from worker.webhooks.sender import WebhookSender

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "event.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())



class Stack:
    """Poller, subscriptions and delivery on one database and one clock."""

    def __init__(self, engine, sim, clock, *, policy=DeliveryPolicy(allow_http=True, allow_private=True),
                 timeout_s=2.0, sink=None):
        self.sim, self.clock = sim, clock
        sessions = make_sessionmaker(engine)
        self.sessions = sessions
        self.poller = PollerService(sessions, ProviderSet({"billit": BillitSettings(
            base_url=sim.url, api_key="sim-billit-key", party_id="1234")}, ProviderContext(
            http=HttpOptions(timeout_s=2), clock=clock)), PollPolicy(), clock=clock, rng=random.Random(1))
        self.subs = Subscriptions(sessions, allow_http=policy.allow_http, allow_private=policy.allow_private,
                                  known_providers=tuple(REGISTRY), clock=clock)
        # Four sending threads: chains of different items go out at once, each still in order.
        self.delivery = DeliveryService(sessions, WebhookSender(timeout_s=timeout_s), policy, sink=sink,
                                        clock=clock, rng=random.Random(2), threads=4)

    def orders(self, n: int, stages: int) -> list[int]:
        """Track n orders and poll them through ``stages`` changes: n * (stages + 1) events."""
        refs = [self.sim.billit.create_order() for _ in range(n)]
        ids = [self.poller.track("billit", str(r), interval_s=5).id for r in refs]
        for _ in range(stages + 1):
            self.poller.dispatch_due(self.poller.poll_claims, lease_s=30, limit=100, chunk_size=100)
            self.sim.clock.advance(10)
            self.clock.advance(6)
        return ids

    def deliver(self) -> int:
        return self.delivery.dispatch_due(self.delivery.deliver, lease_s=60, limit=1000, chunk_size=100)

    def next_due(self) -> bool:
        """Move the clock to the earliest pending delivery; False when none is left."""
        with self.sessions.begin() as s:
            due = min((max(at, leased or at) for at, leased in s.execute(
                select(Delivery.next_attempt_at, Delivery.leased_until).where(Delivery.state == "pending"))),
                default=None)
        if due is None:
            return False
        self.clock.now = max(self.clock.now, due)
        return True

    def rows(self, model):
        with self.sessions.begin() as s:
            return s.scalars(select(model).order_by(model.id)).all()
