import sys

from holodask.cli import main

sys.exit(main())
