"""The `poller` command."""
