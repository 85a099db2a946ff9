"""`python -m neuralsim` == the `neuralsim` console script."""

from neuralsim.cli import main

raise SystemExit(main())
