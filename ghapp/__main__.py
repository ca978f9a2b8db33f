from ghapp.cli import main

raise SystemExit(main())
