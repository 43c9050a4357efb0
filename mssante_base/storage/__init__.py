"""Storage both services' stores stand on: blob files, engines, column types, Message-IDs as stored.

No SQL statements here beyond engine set-up: each store keeps its own queries.
"""
