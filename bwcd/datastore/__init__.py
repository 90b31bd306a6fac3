"""
The datastore: StackStorm's key-value pairs (C{/v1/keys}, C{st2kv} in
templates), with secrets encrypted at rest in st2's keyczar-compatible format.
"""
