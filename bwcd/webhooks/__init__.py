"""
Receiving webhooks: turning an HTTP request into a trigger payload.
"""
