"""Rules for text that arrives from outside (events, query strings, request bodies)."""

import re
import unicodedata

# C0 and C1 control characters, DEL included: never part of a team name, project, model or id a person chose.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shows_nothing(text: str) -> bool:
    """Only whitespace and invisible format characters (a zero-width space, a joiner, a byte-order mark): a name
    that would show as blank in every list and menu."""
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in text)
