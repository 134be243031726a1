import sys

from tempalias.cli import main

sys.exit(main())
