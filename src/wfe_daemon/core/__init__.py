"""The pure core: the workflow model and its checks, the DAG, references, trigger rules, and
the shapes of run summaries and stored records. No I/O, no event loop: everything here is
tested with plain values."""
