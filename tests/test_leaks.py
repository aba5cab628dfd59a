"""The leak search itself: it finds every printing of a secret, and not clock readings or ids."""

from __future__ import annotations

import json
import random

import numpy as np
from leaks import Secrets


def test_every_printing_of_a_secret_is_found_and_clock_readings_and_ids_are_not():
    s = Secrets(random.Random(7))
    for _ in range(500):
        before = set(s.needles)
        number, integer, text = s.number(), s.integer(), s.text()
        scientific = np.format_float_scientific(number, precision=8)
        printings = [repr(number), str(number), str(np.float64(number)), scientific, json.dumps(number),
                     repr(integer), json.dumps([integer]), repr(text), json.dumps(text)]
        for printing in printings:
            assert s.found_in(f"x={printing};") != [], printing
        needle = next(n for n in s.needles - before if n.isdigit())
        clock = f"2026-12-06T10:35:43.{needle}1Z"
        hex_id = f"{needle}0123456789abcdef"
        assert needle not in s.found_in(clock + " " + hex_id), (clock, hex_id)
        assert needle in s.found_in(f"{clock} {needle}"), clock  # a clock beside a printing hides nothing
