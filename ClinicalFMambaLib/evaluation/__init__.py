"""Measuring fusion: the field's ten 8-bit metrics and the paper's protocol (``metrics``),
volume metrics, ranks and wins among methods (``ranking``), grain in flat regions
(``grain``), figures, and the bundled demo. The baselines and the metric objective live in
``objective``, where fusion may use them too.

May import: ``core``, ``io``, ``networks``, ``objective``, ``fusion``.
"""
