"""The hardened SMTP server both services listen with (the operator's MTA and submission, the bridge's LMTP):
the server class, the refusals it makes itself, the aiosmtpd adapter, reply helpers, the peer's identity."""
