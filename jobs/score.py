"""spark-submit entry point of the score step (= `cfrec score`).

spark-submit jobs/score.py --warehouse DIR [--top-n N] [--run-date D] [--model-version V]
"""

import sys

from cfmodel.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
