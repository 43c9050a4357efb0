"""The operator's side of patient mail: the client of the bridge's patient registry.

The pure patient rules (INS, states, conversations, XDM, MSS headers) live in mssante_base.patients.
"""
