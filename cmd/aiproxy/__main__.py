from aiproxy.entrypoints.aiproxy import main

raise SystemExit(main())
