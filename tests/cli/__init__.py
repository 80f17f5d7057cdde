"""`vsm-kit` as a user meets it: each subcommand on the demo world."""
