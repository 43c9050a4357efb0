"""IMAP command handlers, one module per command family; importing the package registers them."""

from . import connection, fetch, folders, messages

__all__ = ["connection", "fetch", "folders", "messages"]
