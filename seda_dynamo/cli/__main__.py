"""``python -m seda_dynamo.cli``: the ``seda-dynamo`` command without its console script.

How tests, ``seda-dynamo cluster`` and the benchmarks start nodes (``... -m seda_dynamo.cli
serve``), with the interpreter they run under. Dynamo paper section 5 (a node is one
process tree started this way).
"""

import sys

from seda_dynamo.cli import main

if __name__ == "__main__":
    sys.exit(main())
