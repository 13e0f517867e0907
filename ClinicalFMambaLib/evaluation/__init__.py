"""Measuring fusion: the field's ten 8-bit metrics and the paper's protocol (``metrics``),
volume metrics, ranks and wins among methods (``ranking``), the metric objective used for
training and per-image refinement (``objective``), grain in flat regions (``grain``), figures,
and the bundled demo.

May import: ``core``, ``io``, ``networks``, ``fusion``.
"""
