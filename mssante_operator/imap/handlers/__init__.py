"""IMAP command handlers, one module per command family; importing the package registers them."""

from . import connection, folders

__all__ = ["connection", "folders"]
