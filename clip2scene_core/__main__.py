import sys

from clip2scene_core.cli import main

sys.exit(main())
