"""Process glue shared by every Stories process: settings, auth, HTTP basics, the CLI."""
