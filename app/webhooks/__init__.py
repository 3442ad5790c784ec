"""Webhook relay: verify → persist → acknowledge → deliver in the background.

``config`` holds the settings models, ``signatures`` the pure verifiers,
``schedule`` the pure retry policy and ``store`` the durable delivery store.
"""
