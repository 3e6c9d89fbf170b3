import json
import sys


def main() -> int:
    # The imports are the slow part (seconds); do them before work arrives.
    from . import train

    line = sys.stdin.readline()
    if not line:
        return 0  # the server went away before handing us a run
    return train.run(json.loads(line))


sys.exit(main())
