from ci.cli import entry

entry()
