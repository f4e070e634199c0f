"""The report fonts, and user text escaped into reportlab's paragraph markup in them.

Embedded TrueType fonts let a name in Greek, Cyrillic, Arabic or Chinese print as written (the
built-in Helvetica has Latin letters only and prints the others as empty boxes).
"""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from functools import cache
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

from app.core.wording import NOT_GIVEN

# Characters that DejaVu Sans lacks (Chinese, Japanese, Korean) are set in WenQuanYi Micro Hei.
FONT_REGULAR = "DejaVuSans"
FONT_BOLD = "DejaVuSans-Bold"
FONT_CJK = "WenQuanYiMicroHei"
# DejaVu Sans comes with matplotlib (a dependency of the service; found without importing it),
# WenQuanYi Micro Hei from Debian's fonts-wqy-microhei.
_MATPLOTLIB_FONTS = (
    Path(next(iter(importlib.util.find_spec("matplotlib").submodule_search_locations or [""])))  # type: ignore[union-attr]
    / "mpl-data"
    / "fonts"
    / "ttf"
)
FONT_FILES: dict[str, tuple[Path, str]] = {
    FONT_REGULAR: (_MATPLOTLIB_FONTS / "DejaVuSans.ttf", "matplotlib"),
    FONT_BOLD: (_MATPLOTLIB_FONTS / "DejaVuSans-Bold.ttf", "matplotlib"),
    FONT_CJK: (Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"), "fonts-wqy-microhei"),
}

# C0 control characters other than tab and newline are not text and would corrupt the PDF strings.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def markup(text: str) -> str:
    """Escape user text for reportlab's paragraph markup, keeping its line breaks."""
    cleaned = _CONTROL_CHARACTERS.sub("", text)
    return _with_fallback_font(cleaned).replace("\n", "<br/>")


def or_not_given(text: str | None) -> str:
    """User text as markup, or a muted "not given" when it is missing or blank."""
    if text is None or not text.strip():
        return f"<font color='#5A6570'>{NOT_GIVEN}</font>"
    return markup(text)


class ReportFontsMissing(RuntimeError):
    """A font file the reports embed is not installed; the message names the Debian package."""


@cache
def register_fonts() -> None:
    """Register the report fonts with reportlab, once; the service calls it at start.

    Raises:
        ReportFontsMissing: a font file is missing. The service refuses to start rather than print
            names in other scripts as empty boxes.
    """
    missing = {package: path for path, package in FONT_FILES.values() if not path.is_file()}
    if missing:
        files = ", ".join(str(path) for path in missing.values())
        raise ReportFontsMissing(
            f"The PDF reports need the font files {files}; install them with "
            f"'apt-get install {' '.join(sorted(missing))}' (scripts/install-system-deps.sh)."
        )
    for name, (path, _) in FONT_FILES.items():
        pdfmetrics.registerFont(TTFont(name, str(path)))
    # Only the upright faces are registered: <i> and <b><i> fall back to upright.
    pdfmetrics.registerFontFamily(
        FONT_REGULAR, normal=FONT_REGULAR, bold=FONT_BOLD, italic=FONT_REGULAR, boldItalic=FONT_BOLD
    )
    # One face only: the Chinese run of a bold line stays regular rather than falling back to Helvetica.
    pdfmetrics.registerFontFamily(
        FONT_CJK, normal=FONT_CJK, bold=FONT_CJK, italic=FONT_CJK, boldItalic=FONT_CJK
    )


@cache
def _regular_characters() -> frozenset[int]:
    """The code points that DejaVu Sans draws; the others are set in the CJK font."""
    register_fonts()
    return frozenset(pdfmetrics.getFont(FONT_REGULAR).face.charToGlyph)


def _rtl_strength(character: str) -> str:
    """'strong' for right-to-left letters, 'mark' for combining marks, 'neutral' for spaces and
    punctuation that take the direction around them, 'other' for the rest."""
    category = unicodedata.bidirectional(character)
    if category in ("R", "AL"):
        return "strong"
    if category == "NSM":
        return "mark"
    return "neutral" if category in ("WS", "ON", "CS", "ES") else "other"


def _visual_order(text: str) -> str:
    """``text`` with each right-to-left run (Arabic, Hebrew) reversed into the order it is drawn.

    reportlab draws characters left to right in the order given, and PDF text is stored in drawn
    order (text extraction turns right-to-left runs back). A run is a stretch from one
    right-to-left letter to the last, with the spaces and punctuation between them; combining
    marks stay after their letter. Letters are drawn in their isolated forms: reportlab joins
    Arabic letters only with its optional shaping packages.
    """
    result: list[str] = []
    index = 0
    while index < len(text):
        if _rtl_strength(text[index]) != "strong":
            result.append(text[index])
            index += 1
            continue
        end = index
        last_strong = index
        while end < len(text) and _rtl_strength(text[end]) in ("strong", "mark", "neutral"):
            if _rtl_strength(text[end]) == "strong":
                last_strong = end
            end += 1
        # Letters with their marks, then reversed; trailing spaces or punctuation stay outside.
        clusters: list[str] = []
        for character in text[index : last_strong + 1]:
            if _rtl_strength(character) == "mark" and clusters:
                clusters[-1] += character
            else:
                clusters.append(character)
        end = last_strong + 1
        while end < len(text) and _rtl_strength(text[end]) == "mark":
            clusters[-1] += text[end]
            end += 1
        result.extend(reversed(clusters))
        index = end
    return "".join(result)


def _with_fallback_font(text: str) -> str:
    """Escape ``text`` for paragraph markup, wrapping runs of characters DejaVu lacks in the CJK font."""
    covered = _regular_characters()
    runs: list[tuple[bool, list[str]]] = []
    for character in _visual_order(text):
        # Spaces and line breaks join the run around them, so a Chinese name stays one run.
        fallback = ord(character) not in covered and not character.isspace()
        if runs and (runs[-1][0] == fallback or character.isspace()):
            runs[-1][1].append(character)
        else:
            runs.append((fallback, [character]))
    return "".join(
        f'<font name="{FONT_CJK}">{escape("".join(part))}</font>' if fallback else escape("".join(part))
        for fallback, part in runs
    )
