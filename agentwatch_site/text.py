"""Rules for text that arrives from outside (events, query strings, request bodies)."""

import re

# C0 and C1 control characters, DEL included: never part of a team name, project, model or id a person chose.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
