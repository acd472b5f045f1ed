"""The stage processes of a seda-dynamo node: one module per stage, each a thin shell.

Each module defines ``Handler``, a ``seda_dynamo.stage.Stage`` that moves events between
queues and the pure cores in ``seda_dynamo``; ``seda_dynamo.runtime`` runs it.
"""
