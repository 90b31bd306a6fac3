"""
The live event stream (st2stream's C{/v1/stream}): Server-Sent Events of
executions, their output, trigger instances and rules, from every process
sharing the store.  L{bwcd.stream.hub} explains where the events come from;
L{bwcd.stream.events} is the wire format and the filters.
"""
