"""``mssante-operator send-bulk``: push a folder of reports from an APP mailbox through the submission port.

A laboratory information system drops thousands of results in a folder; this client sends them over
a few authenticated (certificate, SASL EXTERNAL) connections and keeps a journal in the folder so a
run that crashed or met temporary failures can simply be started again: what was accepted is not sent
twice, and what is sent again carries the same Message-ID (the receiving store de-duplicates on it).

Modules: ``sources`` (what to send, pure), ``compose`` (message bytes, pure), ``journal`` (resumable
state), ``sender`` (the SMTP client, async), ``report`` (summary and refusal CSV), ``runner`` (ties
them together for the command line).
"""
