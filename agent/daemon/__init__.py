"""The agent on a Mac: the daemon's lifecycle, the link handler, its config, status and the Mac owner's services."""
