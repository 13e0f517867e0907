"""The layer every other package stands on: error types and exit codes, intensity
normalisation and colour spaces, differentiable image filters (Gaussian blur, SSIM, Sobel),
the constants of the 8-bit metrics (``metric_constants``).

May import: nothing from the library (numpy, torch only).
"""
