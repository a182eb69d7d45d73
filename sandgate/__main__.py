import sys

from sandgate.cli import main

sys.exit(main())
