"""The HTTP server and what it serves: the API, the web page, metrics and health."""
