"""The SQLite history: the repository (``database.Store``), its connection and fault
classification (``connection``), the one write queue (``writequeue``) running the write
transactions (``transactions``), and the schema's forward migrations (``migrations``)."""
