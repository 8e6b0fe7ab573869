"""Running workflows: the engine, its per-attempt deadlines and wrappers, the task contract
(``task``: what a task type implements and what it is given) and the registry of types."""
