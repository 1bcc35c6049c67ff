"""Provider adapters: one module per provider API, each a fetch (I/O) and a normalize (pure)."""
