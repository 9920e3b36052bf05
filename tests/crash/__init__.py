"""A child process for the crash test: it drives sessions on SQLite until it is killed."""
