"""Helpers the simulator's tests share: starting a simulator, talking to each fake over HTTP, and the
assertions every fake's faults need (``common``); one module per fake for its own requests and bodies."""
