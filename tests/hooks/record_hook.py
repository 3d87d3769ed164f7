"""A shell hook for tests: records each successful call as one JSON line.

usage: record_hook.py RECORD_FILE [MODE] [ARG...]
MODE: ok (default) | tempfail:N (exit 75 for the first N calls per event) |
      sleep:SECONDS (announce the start in RECORD_FILE.started, then sleep) | exit:CODE
"""

import json
import os
import sys
import time
from pathlib import Path

record = Path(sys.argv[1])
mode = sys.argv[2] if len(sys.argv) > 2 else "ok"
event = json.load(sys.stdin)
event_id = os.environ["AMID_EVENT_ID"]

if mode.startswith("tempfail:"):
    counter = record.with_name(f"{record.name}.{event_id}.tries")
    tries = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(tries + 1))
    if tries < int(mode.split(":")[1]):
        sys.exit(75)
elif mode.startswith("sleep:"):
    with record.with_name(record.name + ".started").open("a") as started:
        started.write(f"{os.getpid()}\n")
    time.sleep(float(mode.split(":")[1]))
elif mode.startswith("exit:"):
    sys.exit(int(mode.split(":")[1]))

line = {
    "event_id": event_id,
    "stdin_id": event["id"],
    "image_id": os.environ["AMID_IMAGE_ID"],
    "state": os.environ["AMID_STATE"],
    "handler": os.environ["AMID_HANDLER"],
    "argv": sys.argv[3:],
}
with record.open("a") as file:
    file.write(json.dumps(line) + "\n")
