"""Message syntax: the header summary, DSN syntax (RFC 3464 reports and the DSN parameters)."""
