"""``SimulatorConfig``: the settings of one simulator instance, read by the server and every fake."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SimulatorConfig:
    """Settings for one simulator instance. ``port=0`` picks a free port on start."""

    host: str = "127.0.0.1"
    port: int = 8900
    speed: float = 1.0
    stage_seconds: float = 10.0
    billit_api_key: str = "sim-billit-key"
    billit_party_id: str = "1234"
    seed_orders: int = 3
    #: Lifetime of every access token the fake auth services issue, in real (wall-clock)
    #: seconds: clients compare expiry with their own wall clock.
    token_ttl_seconds: float = 3600.0
    #: Provider-specific options (credentials, keys, seed counts), read by each fake.
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError(f"speed must be >= 0, got {self.speed}")
        if self.stage_seconds <= 0:
            raise ValueError(f"stage_seconds must be > 0, got {self.stage_seconds}")
        if self.seed_orders < 0:
            raise ValueError(f"seed_orders must be >= 0, got {self.seed_orders}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
