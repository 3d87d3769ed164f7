from amid.cli import main

raise SystemExit(main())
