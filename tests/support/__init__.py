"""Test helpers shared by the test modules, the benchmarks and scripts/screenshots.py (none holds a test).

``harness`` runs a real operator on loopback and speaks to it as peer operators do; ``peer`` and
``postfix_peer`` are peer operators (aiosmtpd, and a stock Postfix + OpenDKIM); ``postgres`` and ``slapd``
are throwaway servers; ``browser`` drives headless Chromium (its fixtures are a pytest plugin loaded by
conftest) and ``browser_story`` is the patient's story in it; ``bridge_kit`` and ``web_kit`` set up
mes_bridge and its web space; ``extraction_data`` and ``filing_samples`` build sample files and messages.
"""
