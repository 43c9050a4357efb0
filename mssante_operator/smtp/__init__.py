"""SMTP: listeners, policy checks, routing and delivery targets."""
