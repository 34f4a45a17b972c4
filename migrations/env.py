"""Alembic environment: Kaizen passes its own connection (see store.database.Store.migrate)."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` run by hand: open the store the usual way
    from store.database import Store

    store = Store(migrate=False)
    with store.engine.begin() as connection:
        context.configure(connection=connection, transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()
