"""The hardened SMTP server pieces both services share: the aiosmtpd adapter and reply helpers."""
