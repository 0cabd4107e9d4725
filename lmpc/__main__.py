import sys

from lmpc.cli import main

sys.exit(main())
