"""`/v1/subscriptions` and `/v1/deliveries`: where events go, and how each delivery went."""

from __future__ import annotations

from fastapi import APIRouter

from api.app import PROBLEMS

router = APIRouter(tags=["subscriptions"], responses=PROBLEMS)
