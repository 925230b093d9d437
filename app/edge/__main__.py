"""`python -m app.edge`: render (and check) nginx's configuration."""

from app.edge.nginx import main

raise SystemExit(main())
