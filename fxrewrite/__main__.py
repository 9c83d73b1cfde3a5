import sys

from fxrewrite.cli import main

sys.exit(main())
