"""Event sinks besides webhooks."""
