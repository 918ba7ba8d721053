"""spark-submit entry point of the publish_tables step (= `cfrec tables`): similar_items, item_factors,
user_factors, metrics and model_runs without re-scoring.

    spark-submit jobs/publish.py --warehouse DIR [--run-date D] [--model-version V] [--similar-k K]
"""

import sys

from cfmodel.cli import main

if __name__ == "__main__":
    sys.exit(main(["tables", *sys.argv[1:]]))
