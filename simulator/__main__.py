"""``python -m simulator``: run the provider simulator in the foreground."""

from __future__ import annotations

import argparse

from simulator.server import Simulator, SimulatorConfig


def main(argv: list[str] | None = None) -> None:
    """Parse options, print how to point the poller at the simulator, and serve."""
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port, help="0 picks a free port")
    parser.add_argument("--speed", type=float, default=defaults.speed, help="sim seconds per real second")
    parser.add_argument("--stage-seconds", type=float, default=defaults.stage_seconds)
    parser.add_argument("--seed-orders", type=int, default=defaults.seed_orders)
    args = parser.parse_args(argv)
    sim = Simulator(
        SimulatorConfig(
            host=args.host,
            port=args.port,
            speed=args.speed,
            stage_seconds=args.stage_seconds,
            seed_orders=args.seed_orders,
        )
    )
    # Bind first so describe() can show the real port when --port 0 is used.
    sim.bind()
    print(sim.describe(), flush=True)
    sim.serve_forever()


if __name__ == "__main__":
    main()
