import sys

from fxrewrite.entry import main

if __name__ == "__main__":
    sys.exit(main())
