"""IMAP command handlers, one module per command family; importing the package registers them."""
