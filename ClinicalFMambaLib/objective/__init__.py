"""What a fusion is scored against and optimised towards: the classical baselines (mean, max,
Laplacian pyramid; ``baselines``), differentiable versions of the field's 8-bit metrics with
the sources' own terms computed once per pair (``surrogates``), and the metric objective
that rewards a fused image's gain over the best baseline of each metric on the same image
(``metric_objective``). Training fits networks to the objective; the quality mode of fusion
(``fusion.refine``) optimises each fused image on it at run time.

May import: ``core``.
"""
