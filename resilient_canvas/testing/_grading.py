"""Canvas's ``submission[posted_grade]`` rules, per grading type.

Taken from canvas-lms: the Submissions API documentation of ``posted_grade``,
``Assignment#interpret_grade``, ``#grade_to_score`` and ``#score_to_grade``,
and ``GradingStandard#grade_to_score`` / ``#score_to_grade``:

- points (``"13.5"``) and percentages (``"85%"``, of ``points_possible``)
  are accepted by every grading type, extra credit included;
- ``pass``/``complete`` give full points and ``fail``/``incomplete`` zero,
  on every grading type (case-sensitive, as in Canvas);
- a letter grade (``"A-"``, any case) needs an assignment graded by
  ``letter_grade`` or ``gpa_scale``, and is worth the top of its range (``B``
  from 84% to 87% is worth 86%); on a scheme whose names are numbers (a GPA
  scale: ``"3.7"``) a number that names a grade is read as that grade;
- a ``pass_fail`` assignment takes only 0 or ``points_possible``.

Canvas's documentation says a grade it cannot interpret is rejected; the
simulator answers it as Canvas answers a ``GradeError``: 400 ``{"error": ...}``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

#: Canvas's default grading scheme (``GradingStandard.default_grading_scheme``):
#: each name with the lowest percentage that earns it, highest first.
DEFAULT_SCHEME: tuple[tuple[str, float], ...] = (
    ("A", 94.0),
    ("A-", 90.0),
    ("B+", 87.0),
    ("B", 84.0),
    ("B-", 80.0),
    ("C+", 77.0),
    ("C", 74.0),
    ("C-", 70.0),
    ("D+", 67.0),
    ("D", 64.0),
    ("D-", 61.0),
    ("F", 0.0),
)

#: A 4-point GPA scheme on the default cutoffs, as institutions define one.
GPA_SCHEME: tuple[tuple[str, float], ...] = tuple(
    (name, cutoff)
    for name, (_, cutoff) in zip(
        ("4.0", "3.7", "3.3", "3.0", "2.7", "2.3", "2.0", "1.7", "1.3", "1.0", "0.7", "0.0"),
        DEFAULT_SCHEME,
        strict=True,
    )
)

GRADING_TYPES = ("points", "percent", "letter_grade", "gpa_scale", "pass_fail", "not_graded")

_PERCENT = re.compile(r"[+-]?\d*\.?\d+%")
_NUMBER = re.compile(r"[+-]?\d*\.?\d+")


class GradeError(ValueError):
    """Canvas refuses the posted grade; the message says why."""


def grade(
    assignment: dict[str, Any], posted: str, scheme: Sequence[tuple[str, float]] = DEFAULT_SCHEME
) -> tuple[str, float]:
    """Return the (grade, score) Canvas stores for *posted* on *assignment*.

    Args:
        assignment: The assignment (``grading_type``, ``points_possible``).
        posted: The ``posted_grade`` text, not empty.
        scheme: The assignment's grading scheme (letter_grade and gpa_scale).

    Raises:
        GradeError: Canvas cannot interpret *posted* for this assignment.
    """
    kind = str(assignment.get("grading_type", "points"))
    possible = float(assignment.get("points_possible") or 0.0)
    uses_scheme = kind in ("letter_grade", "gpa_scale")
    score = _interpret(posted, possible, scheme if uses_scheme else ())
    if kind == "pass_fail" and score not in (0.0, possible):
        # Canvas: a pass_fail assignment scores 0 or points_possible, nothing between.
        score = None
    if kind == "not_graded":
        score = None
    if score is None:
        raise GradeError(_reason(posted, kind, possible, scheme if uses_scheme else ()))
    return _to_grade(score, posted, kind, possible, scheme), score


def _interpret(posted: str, possible: float, scheme: Sequence[tuple[str, float]]) -> float | None:
    if _PERCENT.fullmatch(posted):
        return float(Decimal(str(possible)) * Decimal(posted[:-1]) / 100)
    if _NUMBER.fullmatch(posted):
        # On a scheme named by numbers (GPA), a number naming a grade is that grade.
        percent = _scheme_score(posted, scheme)
        return float(posted) if percent is None else _of(possible, percent)
    if posted in ("pass", "complete"):
        return possible
    if posted in ("fail", "incomplete"):
        return 0.0
    percent = _scheme_score(posted, scheme)
    return None if percent is None else _of(possible, percent)


def _of(possible: float, percent: Decimal) -> float:
    return float(Decimal(str(possible)) * percent / 100)


def _scheme_score(name: str, scheme: Sequence[tuple[str, float]]) -> Decimal | None:
    """The percentage a grade name is worth: the top of its range (Canvas's rule)."""
    index = _place(name, scheme)
    if index is None:
        return None
    if index == 0:
        return Decimal(100)
    above = Decimal(str(scheme[index - 1][1]))
    gap = above - Decimal(str(scheme[index][1]))
    # One point below the next cutoff, or a tenth when the range is narrower.
    return above - (Decimal(1) if gap >= 1 else Decimal("0.1"))


def _place(name: str, scheme: Sequence[tuple[str, float]]) -> int | None:
    if _NUMBER.fullmatch(name):
        numeric = [i for i, (key, _) in enumerate(scheme) if _NUMBER.fullmatch(key)]
        return next((i for i in numeric if Decimal(scheme[i][0]) == Decimal(name)), None)
    wanted = name.replace("\u2212", "-").casefold()
    return next((i for i, (key, _) in enumerate(scheme) if key.casefold() == wanted), None)


def _to_grade(
    score: float, posted: str, kind: str, possible: float, scheme: Sequence[tuple[str, float]]
) -> str:
    if kind == "percent":
        percent = round(score / possible * 100, 2) if possible > 0 else score
        return f"{_number(percent)}%"
    if kind == "pass_fail":
        passed = score > 0 if possible > 0 else posted in ("complete", "pass")
        return "complete" if passed else "incomplete"
    if kind in ("letter_grade", "gpa_scale"):
        if possible <= 0:
            return posted
        return score_to_grade(score / possible * 100, scheme)
    return _number(score)


def score_to_grade(percent: float, scheme: Sequence[tuple[str, float]] = DEFAULT_SCHEME) -> str:
    """The scheme's name for *percent*: the highest grade whose cutoff it reaches."""
    percent = max(percent, 0.0)
    reached = [name for name, cutoff in scheme if percent >= cutoff]
    return reached[0] if reached else scheme[-1][0]


def _number(value: float) -> str:
    """Ruby's ``round_if_whole(value).to_s``: ``85`` not ``85.0``, ``85.5`` as is."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _reason(posted: str, kind: str, possible: float, scheme: Sequence[tuple[str, float]]) -> str:
    prefix = f"Invalid grade {posted!r}"
    if kind == "not_graded":
        return f"{prefix}: this assignment is not graded."
    if kind == "pass_fail":
        return (
            f"{prefix}: a pass_fail assignment takes complete, incomplete, pass, fail, "
            f"0 or {_number(possible)} (its points_possible)."
        )
    if scheme:
        names = ", ".join(name for name, _ in scheme)
        return f"{prefix}: not a number, a percentage or a grade of the scheme ({names})."
    return (
        f"{prefix}: this assignment is graded by {kind}; it takes points, a percentage "
        "or pass/fail. Letter grades need a letter_grade or gpa_scale assignment."
    )
