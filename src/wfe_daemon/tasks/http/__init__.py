"""The HTTP tasks: ``http_get`` and the shared client (``task``), ``http_post`` (``post``),
one request and its response (``exchange``), the address guard (``netguard``) and the
streaming of a body to a file (``body``)."""
