"""The patient web space (Mon espace santé style): messages, documents and history over HTTPS.

``make_web_app`` builds the aiohttp application, ``start_web`` serves it on an already bound socket.
"""

from .app import WebOptions, make_web_app, start_web, web_tls

__all__ = ["WebOptions", "make_web_app", "start_web", "web_tls"]
