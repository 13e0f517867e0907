"""How a verdict is put in words, wherever it is shown (command line, Slicer module).

Imports nothing (no torch), so the Slicer module can use it in Slicer's own process.
"""

from __future__ import annotations


def verdict_line(record: dict) -> str:
    if not record["in_scope"]:
        return f"{record['input']}: not classified, {record['reason']}"
    shown = "  ".join(f"{k} {v:.3f}" for k, v in record["probabilities"].items())
    tumour = record.get("tumour_probability")
    if tumour is None:
        return f"{record['input']}: {record['prediction']}  ({shown})"
    return (f"{record['input']}: {volume_verdict(record)}  "
            f"(tumour probability {tumour:.2f}; {shown})")


def volume_verdict(record: dict) -> str:
    """A volume's verdict in words. The tumour type comes from the 2D classifier, trained on
    JPEGs; on volumes it is unvalidated (docs/classifier.md: it named both brain3d gliomas
    meningioma), so it is given as a suggestion, not as the verdict."""
    prediction = record["prediction"]
    if prediction in ("uncertain", "notumor"):
        return prediction
    return f"tumour, {type_suggestion(prediction)}"


def type_suggestion(prediction: str) -> str:
    """How a volume's tumour type is worded wherever it is shown (CLI, Slicer module)."""
    return f"type suggestion {prediction} (not validated on volumes)"
