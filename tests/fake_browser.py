"""A stand-in for the system browser, for `BROWSER`: open the URL like a user clicking "Allow".

`webbrowser.open` runs `python fake_browser.py <url>`. It records the URL in
`$FAKE_BROWSER_LOG` (one line per opening), GETs it and follows the redirect back
to the bridge's loopback callback. `FAKE_BROWSER_MODE=ignore` records the opening
and does nothing else (a user who never signs in).
"""

from __future__ import annotations

import os
import sys
import urllib.request

url = sys.argv[1]
with open(os.environ["FAKE_BROWSER_LOG"], "a") as log:
    log.write(url + "\n")
if os.environ.get("FAKE_BROWSER_MODE") == "ignore":
    sys.exit(0)
try:
    with urllib.request.urlopen(url, timeout=20) as page:  # noqa: S310 - loopback test servers only
        page.read()
except Exception as exc:  # noqa: BLE001 - the bridge reports what went wrong
    print(f"fake browser: {type(exc).__name__}", file=sys.stderr)
    sys.exit(1)
