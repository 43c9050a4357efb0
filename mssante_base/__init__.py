"""The base both services stand on (the operator and mes_bridge); it imports neither of them.

Message syntax and headers, patient identifiers and rules, XDM, TLS identities, the blob store and the
hardened SMTP server pieces.
"""
