"""The CSV tasks (``tasks``: validate_csv, transform_simple), over the reading and writing
of files (``io``), column types (``types``), the transform plan (``plan``) and its Arrow
engine (``arrow``)."""
