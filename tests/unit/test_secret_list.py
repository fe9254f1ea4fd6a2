"""`SecretList`: the one list both logs and errors are redacted with."""

from __future__ import annotations

from bridge.logs import SecretList

SECRET = "tok/with+odd=chars"


def test_a_secret_added_raw_is_hidden_in_every_spelling_it_may_be_shown_in():
    secrets = SecretList()
    secrets.add([SECRET])
    for spelling in (SECRET, "tok%2Fwith%2Bodd%3Dchars", "tok%2fwith%2bodd%3dchars"):
        assert secrets.redact(f"url …/{spelling}/x") == "url …/***/x"


def test_shorten_redacts_before_cutting_so_a_secret_never_half_shows():
    secrets = SecretList([SECRET])
    text = "x" * 290 + SECRET
    assert secrets.shorten(text) == "x" * 290 + "***"
    assert secrets.shorten("y" * 400).endswith("…") and len(secrets.shorten("y" * 400)) == 301
