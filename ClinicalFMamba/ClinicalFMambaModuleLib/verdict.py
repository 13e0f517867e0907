"""The classifier's verdict in words: one word for the verdict table and the status line, one
line for the module panel and the slice views (the tumour-type wording is the library's,
``ClinicalFMambaLib.clinical.wording``)."""

from __future__ import annotations


def verdictWord(result: dict | None) -> str:
    """The volume verdict in a word: a class, "not brain MRI" or "uncertain"."""
    if result is None:
        return ""
    if result.get("in_scope") is False:
        return "not brain MRI"
    if result.get("prediction") in (None, "uncertain"):
        return "uncertain"
    return str(result["prediction"])


def verdictText(result: dict | None) -> str:
    """What the module panel and the slice views show: the class with its probability, or
    that there is no verdict (out of scope, uncertain) and why."""
    word = verdictWord(result)
    if not word:
        return ""
    if word in ("not brain MRI", "uncertain"):
        why = [result.get("reason")]
        if word == "uncertain" and result.get("tumour_probability") is not None:
            why.append(f"tumour probability {result['tumour_probability']:.0%}")
        why = "; ".join(text for text in why if text)
        return f"ClinicalFMamba: {word}, no tumour verdict" + (f" ({why})" if why else "")
    if result.get("tumour_probability") is not None and word == "tumour":
        # A volume: the verdict is the calibrated tumour probability; no type is named where
        # no type model is validated on volumes.
        from ClinicalFMambaLib.clinical.wording import tumour_type_text

        return (f"ClinicalFMamba: tumour ({result['tumour_probability']:.0%}), "
                f"{tumour_type_text(result)}")
    return f"ClinicalFMamba: {word} ({max(result['probabilities']):.0%})"


def verdictSuffix(result: dict) -> str:
    """": <verdict word>" for the status line of a finished run, or nothing unclassified."""
    word = verdictWord(result.get("classification"))
    return f": {word}" if word else ""
