"""IMAP4rev1 protocol: pure parsing of client commands (no I/O), kept apart from their execution."""
