"""The national extraction and its import into the annuaire (`annuaire import`).

The annuaire client itself (types, file and LDAP backends, cache, factory) is shared with the bridge:
mssante_base.annuaire.
"""
