import sys

from cfmodel.cli.main import main

sys.exit(main())
