from specstep.cli import main

raise SystemExit(main())
