"""Alembic environment: Kaizen passes its own connection (see store.database.Store.migrate).

After the revisions, the read-only role is checked and given what it lacks (store.roles.ensure_reader), in the
same transaction: every start, so tables created since (by a revision, or at run time) are readable by it."""

from alembic import context


def run(connection) -> None:
    from store.roles import announce, ensure_reader

    context.configure(connection=connection, transactional_ddl=True)
    with context.begin_transaction():
        before = set(context.get_context().get_current_heads())
        context.run_migrations()
        reader = ensure_reader(connection)
        if set(context.get_context().get_current_heads()) != before:
            announce(reader)


connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` run by hand: open the store the usual way
    from store.database import Store

    store = Store(migrate=False)
    with store.engine.begin() as connection:
        run(connection)
else:
    run(connection)
