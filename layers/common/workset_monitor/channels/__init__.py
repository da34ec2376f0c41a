"""Where notifications go. One module per channel; each takes a WorksetEvent and delivers it."""
