"""Patients of Mon espace santé: INS addresses, patient-space states and the conversation rule.

Everything here is pure (no I/O): the listeners ask the bridge's registry and the store, then ask
these functions what the answers mean.
"""
