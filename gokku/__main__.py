from gokku.cli import main

raise SystemExit(main())
