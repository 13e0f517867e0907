"""The ``clinicalfmamba`` command: ``main`` (parsing, the one error reporter and exit codes)
and one module per group of sub-commands. Training commands import ``training`` only when
they run.

May import: any package; ``train_commands`` alone reaches ``training``, inside its functions.
"""
