"""Plain text as WhatsApp shows it, and the ways a text can state a quantity or carry a link.

Shared by the review of the model's comments (`insights.review`), the message
(`insights.compose`) and the audit (`insights.audit`), so all three judge the
same text the same way. A comment is normalised (NFKC, no markup) *before* it is
checked, so what is checked is exactly what is shown: "½" becomes "1⁄2" and "Ⅻ"
becomes "XII", and both are caught.
"""

from __future__ import annotations

import re
import unicodedata

_MARKUP = re.compile(r"[*_~`]")
_SPACES = re.compile(r"\s+")

# Number words would let a comment state a figure without a digit ("revenue doubled", "a tenfold rise").
# Letters, not \b, delimit them: in the message a comment sits between WhatsApp's `_` markers, which \b
# counts as a letter. "first" and "second" are left out: they rarely state a quantity.
_ROOTS = (
    "zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
    "seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|"
    "million|billion|trillion|dozen|many"
)
NUMBER_WORDS = re.compile(
    rf"(?<![a-z])(?:(?:{_ROOTS})-?fold|(?:{_ROOTS.removesuffix('|many')})s?"
    r"|doubl(?:e[sd]?|ing)|tripl(?:e[sd]?|ing)|quadrupl(?:e[sd]?|ing)|quintupl(?:e[sd]?|ing)"
    r"|half|halv(?:e[sd]?|ing)|twice|thrice|couples?|nil|nought|naught"
    r"|thirds?|fourths?|fifths?|sixths?|sevenths?|eighths?|ninths?|tenths?|hundredths?|thousandths?"
    r"|a\s+quarter\s+of|per\s*cent(?:age)?s?|pct)(?![a-z])",
    re.IGNORECASE,
)
# Roman numerals in capitals ("XII"): two or more numeral letters forming a valid numeral.
_ROMAN = re.compile(
    r"(?<![A-Za-z])(?=[MDCLXVI]{2,}(?![A-Za-z]))M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})(?![A-Za-z])"
)
# What WhatsApp would make clickable: URLs, www., e-mail addresses and bare domains (evil.com/pay, wa.me/123).
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
LINK = re.compile(
    r"(?:https?:|[a-z][a-z0-9+.-]*://|www\.)\S*"
    r"|[\w.+-]+@\S+"
    rf"|(?<![\w@.-])(?:{_LABEL}\.)+[^\W\d_]{{2,24}}(?![\w-])(?:[/:?#]\S*)?",
    re.IGNORECASE,
)


def plain_text(raw: str) -> str:
    """Text as the message shows it: NFKC-normalised, without control, invisible or markup characters,
    on one line with single spaces. Idempotent, so a checked comment is exactly the shown one."""
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in raw)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cf", "Co", "Cs", "Cn"))
    text = _MARKUP.sub("", unicodedata.normalize("NFKC", text))
    return _SPACES.sub(" ", text).strip()


def figure_in(text: str) -> str | None:
    """The first digit, numeral or fraction in any script (ideographs such as 十 included), or sign of
    one (%, a currency), in `text`; None when there is none."""
    for ch in text:
        category = unicodedata.category(ch)
        if category[0] == "N" or category == "Sc" or ch in "%\u2030\u2031" or unicodedata.numeric(ch, None) is not None:
            return ch
    return None


def quantity_problem(text: str) -> str | None:
    """Why `text` may not stand in a message as the model's words (it states a quantity or carries a
    link), or None. `text` is checked raw and as shown, so a numeral that normalisation turns into
    letters ("Ⅻ" -> "XII") is caught either way."""
    for variant in (text, plain_text(text)):
        figure = figure_in(variant)
        if figure is not None:
            return f"it contains a figure ({figure!r})"
        word = NUMBER_WORDS.search(variant) or _ROMAN.search(variant)
        if word:
            return f"it states a quantity ({word.group(0)!r})"
        if LINK.search(variant):
            return "it contains a link or an address"
    return None
