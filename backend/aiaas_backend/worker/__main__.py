import json
import sys


def main() -> int:
    if sys.argv[1:2] == ["--started-file"]:
        # A warm worker tells the server it runs inside its folder (executors/warm.py).
        open(sys.argv[2], "x").close()
    # The imports are the slow part (seconds); do them before work arrives.
    from . import train

    line = sys.stdin.readline()
    if not line:
        return 0  # the server went away before handing us a run
    return train.run(json.loads(line))


sys.exit(main())
