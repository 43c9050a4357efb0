"""The trust space: liste blanche, PKI and peer identity, DKIM."""
