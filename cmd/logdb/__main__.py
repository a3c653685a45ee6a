from aiproxy.entrypoints.logdb import main

raise SystemExit(main())
