"""The operator's annuaire backends (file, LDAP, cache), their factory and the national-extraction import.

The directory's types (Annuaire, MailboxEntry, BalKind) are shared with the bridge: mssante_base.annuaire.
"""
