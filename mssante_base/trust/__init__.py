"""Certificate identities: distinguished names, TLS contexts and peer identities, revocation lists."""
