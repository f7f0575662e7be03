"""Final-answer extraction and equivalence for math datasets (GSM8K and MATH conventions).

- GSM8K: the answer follows `#### ` on the last such line (`... so 72 clips.\n#### 72`).
- MATH: the answer is the argument of the last `\\boxed{...}` (nested braces allowed).
Two answers are equal when both parse as numbers that agree (exactly for integers, fractions
and terminating decimals; to a relative 1e-6 otherwise), or, failing that, when their
normalised strings are identical (LaTeX spacing, `\\left`/`\\right`, `\\text{}`, `$`, `dfrac`
and trailing punctuation removed).
"""

from __future__ import annotations

import re
from fractions import Fraction

_GSM8K = re.compile(r"####\s*([^\n]*)")
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
_FRAC = re.compile(r"^([-+]?)\\frac\{([^{}]+)\}\{([^{}]+)\}$")
_SLASH = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(\D|$))")


def extract_gsm8k(text: str) -> str | None:
    """The text after the last `####` (stripped), or None when there is none or it is empty."""
    found = _GSM8K.findall(text)
    if not found:
        return None
    answer = found[-1].strip()
    return answer or None


def extract_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` or `\\fbox{...}` with balanced braces, else None."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None  # unbalanced: treated as no answer


def extract_answer(text: str, style: str = "auto") -> str | None:
    """The final answer of a completion. style: "gsm8k" (`####`), "boxed" (`\\boxed{}`) or
    "auto" (a boxed answer if present, else `####`). None when the format is not followed."""
    if style == "gsm8k":
        return extract_gsm8k(text)
    if style == "boxed":
        return extract_boxed(text)
    if style == "auto":
        boxed = extract_boxed(text)
        return boxed if boxed is not None else extract_gsm8k(text)
    raise ValueError(f"answer style {style!r}: allowed 'auto', 'gsm8k', 'boxed'")


def reference_answer(answer: str | None = None, solution: str | None = None) -> str | None:
    """The gold answer of a dataset row: the `####` or boxed part of `answer` if it has one,
    else `answer` itself; else the boxed part of `solution` (MATH rows)."""
    if answer is not None:
        answer = str(answer)
        marked = extract_answer(answer, "auto")
        return marked if marked is not None else answer.strip()
    if solution is not None:
        return extract_boxed(str(solution))
    return None


def normalise(text: str) -> str:
    """A canonical string form: no `$`, spaces, LaTeX spacing/sizing commands, `\\text{}`
    wrappers, degree marks or trailing period; `dfrac`/`tfrac` -> `frac`."""
    s = text.strip()
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\mbox\{([^{}]*)\}", r"\1", s)
    for token in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "$", "^\\circ", "^{\\circ}"):
        s = s.replace(token, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\%", "%")
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


def to_number(text: str) -> Fraction | float | None:
    """The value of a numeric answer (`1,234`, `-3.50`, `7/2`, `\\frac{7}{2}`, `25%` as 25), exact
    as a Fraction where possible; None when the text is not a number."""
    s = normalise(text)
    s = _THOUSANDS.sub("", s).rstrip("%")
    if _NUMBER.match(s):
        try:
            return Fraction(s)
        except (ValueError, ZeroDivisionError):
            return float(s)
    for pattern in (_FRAC, _SLASH):
        match = pattern.match(s)
        if match:
            groups = match.groups()
            sign, num, den = ("", *groups) if len(groups) == 2 else groups
            try:
                value = Fraction(normalise(num)) / Fraction(normalise(den))
            except (ValueError, ZeroDivisionError):
                return None
            return -value if sign == "-" else value
    return None


def answers_equal(predicted: str | None, reference: str | None, rel_tol: float = 1e-6) -> bool:
    """Numeric equality when both parse as numbers (|a - b| <= rel_tol * max(1, |b|)), else
    equality of the normalised strings. None never equals anything."""
    if predicted is None or reference is None:
        return False
    a, b = to_number(predicted), to_number(reference)
    if a is not None and b is not None:
        if isinstance(a, Fraction) and isinstance(b, Fraction):
            return a == b
        return abs(float(a) - float(b)) <= rel_tol * max(1.0, abs(float(b)))
    return normalise(predicted) == normalise(reference)
