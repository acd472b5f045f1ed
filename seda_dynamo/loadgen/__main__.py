"""``python -m seda_dynamo.loadgen --child PARENT_PID SPEC_JSON``: one client process of a
load generator run (``processes.child_main``), started by the parent's ``execute``.

Dynamo paper section 6: the clients whose latency the figures report.
"""

from __future__ import annotations

import sys

from seda_dynamo.loadgen.processes import child_main

if sys.argv[1:2] == ["--child"]:
    sys.exit(child_main(sys.argv[1:]))
sys.exit("usage: python -m seda_dynamo.loadgen --child PARENT_PID SPEC_JSON (its parent runs it)")
