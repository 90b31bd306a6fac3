"""
Receiving webhooks: parsing their bodies (L{bwcd.webhooks.body}) and the
headers kept in their payloads (L{bwcd.webhooks.headers}).  The routes are
L{bwcd.api.webhook_routes}; the daemon connects them to the rules engine in
L{bwcd.service}.
"""
