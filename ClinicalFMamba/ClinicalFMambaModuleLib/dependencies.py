"""PyTorch and the library's other packages in Slicer's Python: checked without importing
torch into Slicer's process, installed (after asking) when missing."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import slicer

from .errors import DependencyError

# Import name -> pip requirement of every package the library needs besides torch (which
# comes from the PyTorch extension); the same as pyproject.toml's dependencies.
REQUIREMENTS = {
    "numpy": "numpy>=1.24", "scipy": "scipy>=1.10", "skimage": "scikit-image>=0.21",
    "SimpleITK": "SimpleITK>=2.3", "safetensors": "safetensors>=0.4", "tqdm": "tqdm>=4.60",
    "PIL": "Pillow>=9.0",
}
MINIMUM_TORCH = "2.1"  # pyproject.toml: torch>=2.1


def ensureDependencies(askConfirmation: bool = True) -> None:
    """Make torch (>= MINIMUM_TORCH) and the library's packages installed, installing what
    is missing, without importing torch into Slicer's process.

    torch comes from the PyTorch extension (PyTorchUtils), the rest from pip. With
    ``askConfirmation`` the user is asked first; a refusal or a failed installation raises
    ``DependencyError`` saying what is missing. The optional mamba-ssm kernel is not
    installed from here (it compiles for minutes): docs/slicer.md says how.
    """
    if importlib.util.find_spec("torch") is None:
        _installTorch(askConfirmation)
    else:
        checkTorchVersion()
    missing = [requirement for name, requirement in REQUIREMENTS.items()
               if importlib.util.find_spec(name) is None]
    if missing:
        _confirm(f"ClinicalFMamba needs these Python packages: {', '.join(missing)}."
                 " Download and install them now?", askConfirmation,
                 f"ClinicalFMamba cannot run without {', '.join(missing)} (installation"
                 " was declined)")
        _pipInstall(missing)


def checkTorchVersion() -> None:
    """Refuse an installed torch older than MINIMUM_TORCH, reading the package metadata
    (which imports nothing)."""
    try:
        installed = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return  # a torch without metadata (built from source): nothing to compare
    release = tuple(int(part) for part in installed.split("+")[0].split(".")[:2]
                    if part.isdigit())
    minimum = tuple(int(part) for part in MINIMUM_TORCH.split("."))
    if release < minimum:
        raise DependencyError(f"PyTorch {installed} is too old; ClinicalFMamba needs"
                              f" {MINIMUM_TORCH} or newer (PyTorch Utils module: install with"
                              f" the requirement >={MINIMUM_TORCH})")


def _confirm(question: str, ask: bool, refusal: str) -> None:
    if ask and not slicer.util.confirmOkCancelDisplay(question):
        raise DependencyError(refusal)


def _installTorch(ask: bool) -> None:
    try:
        import PyTorchUtils
    except ModuleNotFoundError as error:
        raise DependencyError("PyTorch is not installed and the PyTorch extension is missing:"
                              " install 'PyTorch' from the Extensions Manager, restart Slicer"
                              " and try again") from error
    _confirm("ClinicalFMamba needs PyTorch (a large download). Install it now?", ask,
             "ClinicalFMamba cannot run without PyTorch (installation was declined)")
    try:
        # The version requirement as SlicerTotalSegmentator passes it (TotalSegmentator.py
        # lines 844-887).
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=f">={MINIMUM_TORCH}")
    except Exception as error:
        raise DependencyError(f"installing PyTorch failed: {error}") from error
    if torch is None:
        raise DependencyError("PyTorch was not installed; ClinicalFMamba cannot run without it")


def _pipInstall(requirements: list[str]) -> None:
    try:
        slicer.util.pip_install(requirements)
    except Exception as error:
        raise DependencyError(f"installing {', '.join(requirements)} failed: {error}") from error
