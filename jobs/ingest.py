"""spark-submit entry point: `spark-submit jobs/ingest.py --source S --input DIR --warehouse DIR [--run-date D]`."""

import sys

from cfmodel.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
