"""The bridge's commands, one module each: `run` (the default), `check`, `config`, `servers`, `login` /
`logout` (in `login.py`), `demo`; `options.py` holds the options two commands share."""
