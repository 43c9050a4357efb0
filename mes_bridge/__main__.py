"""``python -m mes_bridge``: the same as the ``mes-bridge`` command."""

from .cli import main

main()
