"""The selective scan of Mamba with the ``mamba_ssm`` contract: ``dispatch`` picks mamba-ssm's
CUDA kernel, the Triton kernel (``triton_scan``) or the pure-PyTorch chunked scan
(``chunked``), which all give the same numbers; ``contract`` checks the shapes they share.

May import: nothing outside this folder.
"""
