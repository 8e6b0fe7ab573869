"""The ``http_get`` task: the task (``task``), its address guard (``netguard``) and the
streaming of a body to a file (``body``)."""
