from b2cryptfs.cli.main import main

raise SystemExit(main())
