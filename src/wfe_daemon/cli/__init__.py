"""The command line: the commands (``commands.main``, the ``wfe-daemon`` entry point), their
arguments, what they print (``views``, ``progress``), and the task reference generator."""
