"""The background side: procrastinate jobs in the same PostgreSQL, the worker process that runs them and yields
to a person being answered, and drift alerts when quality drops."""
