"""`python -m payments_service` starts the server."""

import sys

from payments_service.server import main

sys.exit(main())
