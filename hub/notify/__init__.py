"""Notifications that reach a person and are not lost: a durable outbox in the hub's database,
delivered to apprise URLs (ntfy, Gotify, email, Matrix, ...), JSON webhooks and Alertmanager.
See docs/notify.md."""
