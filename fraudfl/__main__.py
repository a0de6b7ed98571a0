import sys

from fraudfl.cli import main

sys.exit(main())
