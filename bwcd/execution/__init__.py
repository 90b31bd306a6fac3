"""
The execution wing: the execution records and their status flow
(L{bwcd.execution.service}), the executor that claims and runs them
(L{bwcd.execution.executor}), node liveness (L{bwcd.execution.nodes}) and
the runners that start local processes (L{bwcd.execution.runners}).
"""
