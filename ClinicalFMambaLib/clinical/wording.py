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


# A volume record's ``tumour_type`` is null until a type model is validated on volumes: the
# 2D classifier, trained on JPEGs, named every brain3d glioma meningioma (docs/classifier.md).
TYPE_UNDETERMINED = "type undetermined (no tumour-type model is validated on volumes)"


def volume_verdict(record: dict) -> str:
    """A volume's verdict in words: "tumour" with its type or that the type is undetermined,
    "notumor" or "uncertain"."""
    prediction = record["prediction"]
    if prediction != "tumour":
        return prediction
    return f"tumour, {tumour_type_text(record)}"


def tumour_type_text(record: dict) -> str:
    """How a volume's tumour type is worded wherever it is shown (CLI, Slicer module)."""
    return f"type {record['tumour_type']}" if record.get("tumour_type") else TYPE_UNDETERMINED
