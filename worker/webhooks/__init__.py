"""Webhook delivery: payloads and signatures (pure), URL safety, sending, decisions."""
