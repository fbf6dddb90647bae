import sys

from hpa.cli import main

sys.exit(main())
