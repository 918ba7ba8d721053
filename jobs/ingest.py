"""spark-submit entry point of the ingest step (= `cfrec ingest`, every option of it).

spark-submit jobs/ingest.py --source S --input DIR --warehouse DIR [--run-date D] [source options]
"""

import sys

from cfmodel.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
