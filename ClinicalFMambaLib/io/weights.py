"""Model weights as safetensors files checked against a SHA-256 manifest.

Weights never go through pickle: a safetensors file holds tensors plus a small string
metadata map (we keep the model config there as JSON). Every bundled file is listed in
``MANIFEST.json`` beside it; a file whose hash differs is refused before it is parsed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

MANIFEST_NAME = "MANIFEST.json"
BUNDLED_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "Resources" / "weights"


class WeightsError(RuntimeError):
    """A weights file is missing, corrupt or does not match its manifest."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(folder: Path) -> dict:
    manifest = folder / MANIFEST_NAME
    if not manifest.exists():
        return {}
    return json.loads(manifest.read_text())


def manifest_entry(path: str | Path) -> dict | None:
    """The manifest's entry for a weights file (SHA-256, command, ...), None if unlisted."""
    path = Path(path)
    return _read_manifest(path.parent).get(path.name)


def set_manifest_entry(path: str | Path, entry: dict) -> None:
    """Replace the manifest's entry for a weights file with ``entry``."""
    path = Path(path)
    manifest = _read_manifest(path.parent)
    manifest[path.name] = entry
    (path.parent / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def float16_storage(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` with its float32 tensors as float16, half the file size
    (``load_weights`` casts them back; other tensors are kept)."""
    return {key: value.half() if value.dtype == torch.float32 else value
            for key, value in state_dict.items()}


def save_weights(state_dict: dict[str, torch.Tensor], path: str | Path, config: dict,
                 extra: dict | None = None) -> str:
    """Write ``state_dict`` with its config and register the file's SHA-256 in the manifest.

    ``extra`` (training command, validation numbers, ...) goes into the manifest entry.
    Returns the hash.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    tmp = path.with_suffix(path.suffix + ".part")
    save_file(tensors, str(tmp), metadata={"config": json.dumps(config, sort_keys=True)})
    tmp.replace(path)
    digest = sha256_of(path)
    set_manifest_entry(path, {"sha256": digest, **(extra or {})})
    return digest


def load_weights(path: str | Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Return ``(state_dict, config)``; refuse a file whose hash is not the manifest's.

    float16 and bfloat16 tensors come back as float32."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if verify:
        entry = manifest_entry(path)
        if entry is None:
            raise WeightsError(f"{path.name} is not listed in {path.parent / MANIFEST_NAME}; "
                               "refusing unverified weights (pass verify=False to override)")
        actual = sha256_of(path)
        if actual != entry["sha256"]:
            raise WeightsError(f"{path} is corrupt or was modified: SHA-256 {actual} does not "
                               f"match the manifest's {entry['sha256']}")
    try:
        # Some files store float16 to keep the repository small; networks compute in float32.
        state = {key: value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
                 for key, value in load_file(str(path)).items()}
        with safe_open(str(path), framework="pt") as handle:
            config = json.loads((handle.metadata() or {}).get("config", "{}"))
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path} is not a readable safetensors file: {error}") from error
    return state, config


def load_network(path: str | Path, model: str, what: str, build, verify: bool = True
                 ) -> tuple[torch.nn.Module, dict]:
    """The network a weights file holds, built by ``build(config)`` in eval mode, and its
    config; a file whose config names another ``model`` is refused as not ``what``."""
    state, config = load_weights(path, verify=verify)
    if config.get("model") != model:
        raise ValueError(f"{path} is not {what} (config model {config.get('model')!r})")
    net = build(config)
    net.load_state_dict(state)
    return net.eval(), config


def provenance(path: str | Path) -> dict:
    """Where verified weights came from: their path, SHA-256 and the manifest's training
    command (recorded with weights fine-tuned from them, so the chain stays reproducible)."""
    entry = manifest_entry(path) or {}
    return {"path": str(path), "sha256": sha256_of(path), "command": entry.get("command", "")}


def bundled(name: str) -> Path:
    """Path of a weights file shipped in Resources/weights."""
    return BUNDLED_WEIGHTS_DIR / name
