"""The server side: local runner, HTTP server, client backends, emulator, benchmark (no torch)."""
