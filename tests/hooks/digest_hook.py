"""A shell hook for digest tests: appends what it was handed (stdin, AMID_*) as one JSON line.

usage: digest_hook.py RECORD_FILE
"""

import json
import os
import sys
from pathlib import Path

line = {
    "stdin": json.load(sys.stdin),
    "env": {key: value for key, value in os.environ.items() if key.startswith("AMID_")},
}
with Path(sys.argv[1]).open("a") as file:
    file.write(json.dumps(line) + "\n")
