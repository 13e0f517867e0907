"""The layer every other package stands on: error types and exit codes, intensity
normalisation and colour spaces, differentiable image filters (Gaussian blur, SSIM, Sobel).

May import: nothing from the library (numpy, torch only).
"""
